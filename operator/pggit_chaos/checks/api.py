"""One way to call pgGit from the checks, whatever pgGit is installed.

Used by every check module (fixture ``pggit``). The checks state pgGit's promises once; this
module knows how each pgGit shape keeps its records: the embedded core
(``docs/pggit-core.md``) and upstream pgGit's public API (``generate_trinity_id()`` without an
argument, ``objects.content_hash``, history linked to objects by ``object_id`` only,
``increment_version`` returning a row, ``health_check()`` naming rows ``check_name``). Where an
installed pgGit documents a different behaviour that is no safety issue (it trims messages,
raises P0001 instead of 22023, accepts fewer branch names), a check notes it as a *deviation*:
for the embedded core that is a fail (its contract is exact), for any other pgGit the check
ends ``differs`` instead of ``passed``, with the note.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from pggit_chaos.pggit import Capabilities, health_query

Conn = psycopg.Connection[Any]

#: Branch-name rule of upstream pgGit (a CHECK on ``pggit.branches.name``).
UPSTREAM_BRANCH_NAME = re.compile(r"^[a-zA-Z0-9._/#-]+$")


class DeviationNotAllowed(AssertionError):
    """The embedded core must keep its contract exactly: a deviation there is a fail."""


@dataclass
class Deviations:
    """Documented differences one check found (its outcome becomes ``differs``)."""

    notes: list[str] = field(default_factory=list)
    _keys: set[str] = field(default_factory=set)

    def note(self, message: str, key: str | None = None) -> None:
        """Keep ``message`` once per ``key`` (hypothesis repeats a deviation per example)."""
        key = key or message
        if key not in self._keys:
            self._keys.add(key)
            self.notes.append(message)


@dataclass(frozen=True)
class TrackedObject:
    """The ``pggit.objects`` row of one object (the columns the checks read)."""

    id: int
    version: int
    recorded_hash: str | None
    is_active: bool
    semver: str


def _sig_types(args: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(a.removeprefix("pg_catalog.") for a in args)


class PgGitApi:
    """The installed pgGit, called the way its shape wants; deviations go to ``deviations``."""

    def __init__(self, caps: Capabilities, deviations: Deviations | None = None) -> None:
        self.caps = caps
        self.deviations = deviations if deviations is not None else Deviations()

    # -- what is installed ---------------------------------------------------------------------
    @property
    def shape(self) -> str:
        return self.caps.shape

    @property
    def embedded(self) -> bool:
        return self.caps.embedded

    def has(self, name: str) -> bool:
        return self.caps.has(name)

    def deviate(self, message: str, key: str | None = None) -> None:
        """Note a documented difference; for the embedded core it is a broken contract."""
        if self.embedded:
            raise DeviationNotAllowed(message)
        self.deviations.note(message, key)

    def expect_rejected(self, error: psycopg.Error, sqlstate: str, what: str) -> None:
        """``error`` rejected ``what`` as it should; a different SQLSTATE is a deviation."""
        if error.sqlstate != sqlstate:
            detail = " ".join(str(error).split())[:160]
            self.deviate(
                f"{what} is rejected with SQLSTATE {error.sqlstate}, not {sqlstate} ({detail})",
                key=f"sqlstate {what}",
            )

    @property
    def hash_column(self) -> str | None:
        """The objects column holding a table's recorded structure hash."""
        return self.caps.hash_column

    # -- Trinity IDs, commits, branches ----------------------------------------------------
    def generate_ids(self, conn: Conn, branch: str, count: int) -> list[str]:
        """``count`` IDs from one statement (the same now()) of ``generate_trinity_id``."""
        if self.caps.signature("generate_trinity_id", 1) is not None:
            rows = conn.execute(
                "SELECT pggit.generate_trinity_id(%s) FROM generate_series(1, %s)",
                (branch, count),
            )
        else:
            rows = conn.execute(
                "SELECT pggit.generate_trinity_id() FROM generate_series(1, %s)", (count,)
            )
        return [str(r[0]) for r in rows]

    def commit(
        self, conn: Conn, branch: str, message: str = "", custom_id: str | None = None
    ) -> str:
        """``pggit.commit_changes(branch, message[, custom_id])``; returns the Trinity ID."""
        if custom_id is None:
            row = conn.execute("SELECT pggit.commit_changes(%s, %s)", (branch, message)).fetchone()
        else:
            row = conn.execute(
                "SELECT pggit.commit_changes(%s, %s, %s)", (branch, message, custom_id)
            ).fetchone()
        assert row is not None and row[0], f"commit_changes({branch!r}) returned no Trinity ID"
        return str(row[0])

    def create_branch(self, conn: Conn, name: str) -> int:
        row = conn.execute("SELECT pggit.create_branch(%s)", (name,)).fetchone()
        assert row is not None and row[0] is not None, f"create_branch({name!r}) returned nothing"
        return int(row[0])

    def branch_name(self, name: str) -> str:
        """``name`` if this pgGit accepts it, else a deviation and the name in its charset."""
        if self.embedded or UPSTREAM_BRANCH_NAME.match(name) or self.shape == "unknown":
            return name
        self.deviate(
            f"branch names must match {UPSTREAM_BRANCH_NAME.pattern} (e.g. {name!r} is refused)",
            key="branch charset",
        )
        return re.sub(r"[^a-zA-Z0-9._/#-]", "-", name)

    def chain(self, conn: Conn, branch: str) -> list[tuple[str, str | None, str]]:
        """(hash, parent, message) of a branch's commits, oldest first."""
        return [
            (str(h), None if p is None else str(p), str(m))
            for h, p, m in conn.execute(
                "SELECT c.hash, c.parent_commit_hash, c.message FROM pggit.commits c"
                " JOIN pggit.branches b ON b.id = c.branch_id WHERE b.name = %s ORDER BY c.id",
                (branch,),
            )
        ]

    def head(self, conn: Conn, branch: str) -> str | None:
        row = conn.execute(
            "SELECT head_commit_hash FROM pggit.branches WHERE name = %s", (branch,)
        ).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    # -- objects and history ---------------------------------------------------------------
    def tracked(
        self, conn: Conn, schema: str, name: str, object_type: str = "TABLE"
    ) -> TrackedObject | None:
        """The object's own row (the first one: upstream copies rows into new branches)."""
        column = self.hash_column
        recorded = f"o.{column}" if column else "NULL::text"
        row = conn.execute(
            f"SELECT o.id, o.version, {recorded}, o.is_active,"  # noqa: S608 - fixed names
            " o.version_major || '.' || o.version_minor || '.' || o.version_patch"
            " FROM pggit.objects o WHERE o.object_type::text = %s"
            " AND o.schema_name = %s AND o.object_name = %s ORDER BY o.id LIMIT 1",
            (object_type, schema, name),
        ).fetchone()
        if row is None:
            return None
        return TrackedObject(int(row[0]), int(row[1]), row[2], bool(row[3]), str(row[4]))

    def history(self, conn: Conn, schema: str, name: str, object_type: str = "TABLE") -> list[str]:
        """change_type of every history row of the object, oldest first."""
        if self.caps.has("history.schema_name") and self.caps.has("history.object_type"):
            query = (
                "SELECT change_type::text FROM pggit.history WHERE object_type::text = %s"
                " AND schema_name = %s AND object_name = %s ORDER BY id"
            )
        else:
            query = (
                "SELECT h.change_type::text FROM pggit.history h"
                " JOIN pggit.objects o ON o.id = h.object_id WHERE o.object_type::text = %s"
                " AND o.schema_name = %s AND o.object_name = %s ORDER BY h.id"
            )
        return [str(c) for (c,) in conn.execute(query, (object_type, schema, name))]

    def statements(self, conn: Conn, schema: str, change: str) -> list[str]:
        """``sql_executed`` of the history rows of ``change`` for objects of ``schema``."""
        if self.caps.has("history.schema_name"):
            query = (
                "SELECT sql_executed FROM pggit.history"
                " WHERE schema_name = %s AND change_type::text = %s"
            )
        else:
            query = (
                "SELECT h.sql_executed FROM pggit.history h JOIN pggit.objects o"
                " ON o.id = h.object_id WHERE o.schema_name = %s AND h.change_type::text = %s"
            )
        return [str(s) for (s,) in conn.execute(query, (schema, change)) if s]

    def active_remnants(self, conn: Conn, schema: str, table: str) -> list[tuple[str, str]]:
        """(type, name) of objects still active that belong to a dropped ``schema.table``.

        Columns (``table.column`` rows, or rows whose ``parent_id`` is the table's), indexes
        and constraints recorded under the table: once the table is gone, none may stay active.
        """
        parent = (
            " OR o.parent_id IN (SELECT p.id FROM pggit.objects p WHERE p.object_type::text ="
            " 'TABLE' AND p.schema_name = %(s)s AND p.object_name = %(t)s)"
            if self.caps.has("objects.parent_id")
            else ""
        )
        rows = conn.execute(
            "SELECT o.object_type::text, o.object_name FROM pggit.objects o"  # noqa: S608
            " WHERE o.is_active AND o.schema_name = %(s)s AND (o.object_name = %(t)s"
            " OR left(o.object_name, length(%(t)s) + 1) = %(t)s || '.'" + parent + ")"
            " AND to_regclass(quote_ident(%(s)s) || '.' || quote_ident(%(t)s)) IS NULL"
            " ORDER BY o.id",
            {"s": schema, "t": table},
        ).fetchall()
        return [(str(k), str(n)) for k, n in rows]

    # -- hashes and versions ---------------------------------------------------------------
    def live_hash(self, conn: Conn, schema: str, table: str) -> str | None:
        """The table's structure hash as pgGit computes it now."""
        qualified = sql.Identifier(schema, table).as_string(conn)
        row = conn.execute("SELECT pggit.calculate_schema_hash(%s)", (qualified,)).fetchone()
        if row is not None and row[0]:
            return str(row[0])
        if self.caps.signature("compute_ddl_hash", 3) is not None:
            self.deviate(
                "calculate_schema_hash('schema.table') returns NULL outside schema public;"
                " compute_ddl_hash('TABLE', schema, table) hashes the scratch tables instead"
            )
            row = conn.execute(
                "SELECT pggit.compute_ddl_hash('TABLE', %s, %s)", (schema, table)
            ).fetchone()
            if row is not None and row[0]:
                return str(row[0])
        return None

    def version_of(self, conn: Conn, dotted: str) -> str | None:
        """``get_version(object)`` as ``'major.minor.patch'`` (text or a row's version_string)."""
        sig = self.caps.signature("get_version", 1)
        if sig is not None and "version_string" in sig.columns:
            row = conn.execute(
                "SELECT version_string FROM pggit.get_version(%s)", (dotted,)
            ).fetchone()
        else:
            row = conn.execute("SELECT pggit.get_version(%s)", (dotted,)).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def can_increment_version(self) -> bool:
        return self._semver_signature() is not None

    def _semver_signature(self) -> tuple[str, ...] | None:
        for sig in self.caps.signatures.get("increment_version", ()):
            types = _sig_types(sig.args)
            if len(types) == 4 and types[:3] == ("integer",) * 3 and types[3] == "text":
                return sig.columns
        return None

    def increment_version(self, conn: Conn, major: int, minor: int, patch: int, kind: str) -> str:
        """``increment_version(major, minor, patch, kind)`` as ``'M.m.p'`` (text or a row)."""
        columns = self._semver_signature()
        args = (major, minor, patch, kind)
        if columns and "full_version" in columns:
            row = conn.execute(
                "SELECT full_version FROM pggit.increment_version("
                "%s::int, %s::int, %s::int, %s::text)",
                args,
            ).fetchone()
        elif columns and {"major", "minor", "patch"} <= set(columns):
            row = conn.execute(
                "SELECT major || '.' || minor || '.' || patch FROM pggit.increment_version("
                "%s::int, %s::int, %s::int, %s::text)",
                args,
            ).fetchone()
        else:
            row = conn.execute(
                "SELECT pggit.increment_version(%s::int, %s::int, %s::int, %s::text)", args
            ).fetchone()
        assert row is not None, f"increment_version{args} returned no row"
        return str(row[0])

    def health(self, conn: Conn) -> list[tuple[str, str, str]]:
        """(name, status, details) rows of ``pggit.health_check()``."""
        sig = self.caps.signature("health_check", 0)
        columns = sig.columns if sig is not None else ("component", "status", "details")
        query = health_query(columns)
        return [(str(n), str(s), str(d)) for n, s, d in conn.execute(query)]
