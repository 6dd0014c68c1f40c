"""Find and remove every pgGit row a chaos run or check caused, in any pgGit's shape.

Called by the checks suite (each scratch area, the post-run audit, the sweep of dead runs) and
by run cleanup. A pggit-chaos run names everything it creates with a random prefix
(``chaos_check_<run>_...``, ``chaos_run_<id>``): its schemas, branches, tables, messages. pgGit
records those names in its own tables — and, depending on the pgGit, in side tables nobody
listed in advance (upstream pgGit copies every object into a new branch, logs DDL events in
``system_events``). So instead of a fixed list of DELETEs this module asks the catalog:

1. **seeds**: rows of every ``pggit.*`` table whose text (``row::text``) contains the prefix;
2. **closure**: rows that reference a seed through a foreign key declared in schema ``pggit``
   (history rows of a scratch object, commits on a scratch branch, objects copied into it),
   plus the links pgGit keeps without a foreign key (:data:`SOFT_LINKS`), to a fixed point;
3. **purge**: one DELETE statement over all of them (data-modifying CTEs), so foreign keys in
   cycles (a branch's head is a commit that sits on the branch) are checked once, at the end.

Prefixes are matched with ``strpos`` (no LIKE wildcards: ``_`` is literal) and passed as
parameters; table names come from the catalog and are quoted. Nothing outside schemas named by
the prefix and rows naming it (or hanging off such rows) is touched.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

#: Links pgGit keeps without a declared foreign key: (child table, column, parent table, column).
SOFT_LINKS: tuple[tuple[str, str, str, str], ...] = (
    ("history", "object_id", "objects", "id"),
    ("commits", "branch_id", "branches", "id"),
    ("objects", "branch_id", "branches", "id"),
    ("history", "branch_id", "branches", "id"),
)
#: A run never leaves more than this many rounds of references to follow.
MAX_ROUNDS = 12
#: Tables pgGit derives from others and keeps itself (the embedded core's ``tree_parts``: the
#: tree hash's parts, written by triggers on ``objects``): never purged row by row. After a
#: purge they are folded (``pggit._tree_compact()``, when the pgGit has it), so that a run's
#: parts, which cancel out once its objects are gone, do not stay behind as rows.
DERIVED_TABLES = frozenset({"tree_parts"})


@dataclass(frozen=True)
class _Link:
    """``child(child_cols)`` references ``parent(parent_cols)``."""

    child: str
    child_cols: tuple[str, ...]
    parent: str
    parent_cols: tuple[str, ...]


@dataclass
class Footprint:
    """Rows (by table) and schemas that carry a prefix or hang off rows that do."""

    prefix: str
    rows: dict[str, int] = field(default_factory=dict)
    schemas: list[str] = field(default_factory=list)
    #: Throwaway roles (the security checks' ordinary role) dropped with what they owned.
    roles: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.rows.values())

    def nonzero(self) -> dict[str, int]:
        return {table: n for table, n in sorted(self.rows.items()) if n}

    def describe(self) -> str:
        parts = [f"pggit.{t}: {n}" for t, n in self.nonzero().items()]
        parts += [f"schema {s}" for s in self.schemas]
        parts += [f"role {r}" for r in self.roles]
        return ", ".join(parts) or "nothing"


def _check_prefix(prefix: str) -> None:
    if len(prefix) < 8 or not prefix.startswith("chaos_"):
        raise ValueError(f"refusing to sweep {prefix!r}: not a pggit-chaos prefix")


def pggit_tables(conn: psycopg.Connection[Any]) -> list[str]:
    """Ordinary and partitioned tables of schema ``pggit`` (partitions are reached via parents)."""
    return [
        str(name)
        for (name,) in conn.execute(
            "SELECT c.relname FROM pg_catalog.pg_class c"
            " WHERE c.relnamespace = to_regnamespace('pggit') AND c.relkind IN ('r', 'p')"
            " AND NOT c.relispartition ORDER BY c.relname"
        )
    ]


def _links(conn: psycopg.Connection[Any], tables: Iterable[str]) -> list[_Link]:
    present = set(tables)
    links: list[_Link] = []
    for child, child_cols, parent, parent_cols in conn.execute(
        "SELECT cl.relname, ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY"
        "         AS k(n, i) JOIN pg_catalog.pg_attribute a"
        "         ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i),"
        "       pl.relname, ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY"
        "         AS k(n, i) JOIN pg_catalog.pg_attribute a"
        "         ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i)"
        "  FROM pg_catalog.pg_constraint c"
        "  JOIN pg_catalog.pg_class cl ON cl.oid = c.conrelid"
        "  JOIN pg_catalog.pg_class pl ON pl.oid = c.confrelid"
        " WHERE c.contype = 'f' AND cl.relnamespace = to_regnamespace('pggit')"
        "   AND pl.relnamespace = to_regnamespace('pggit')"
    ):
        if child in present and parent in present:
            links.append(_Link(str(child), tuple(child_cols), str(parent), tuple(parent_cols)))
    columns: dict[str, set[str]] = {}
    for table, column in conn.execute(
        "SELECT c.relname, a.attname FROM pg_catalog.pg_attribute a"
        " JOIN pg_catalog.pg_class c ON c.oid = a.attrelid"
        " WHERE c.relnamespace = to_regnamespace('pggit') AND a.attnum > 0"
        " AND NOT a.attisdropped"
    ):
        columns.setdefault(str(table), set()).add(str(column))
    declared = {(k.child, k.child_cols, k.parent, k.parent_cols) for k in links}
    for child, ccol, parent, pcol in SOFT_LINKS:
        key = (child, (ccol,), parent, (pcol,))
        if (
            key not in declared
            and ccol in columns.get(child, set())
            and pcol in columns.get(parent, set())
        ):
            links.append(_Link(child, (ccol,), parent, (pcol,)))
    return links


def _seed(conn: psycopg.Connection[Any], table: str, prefix: str, *, own: bool = False) -> set[str]:
    """Rows of ``table`` naming ``prefix``; with ``own``, also rows this transaction wrote."""
    where = "strpos(x::text, %s) > 0"
    if own:  # pgGit's triggers logging our DROP SCHEMA (e.g. a scratch table's TOAST table)
        where += " OR x.xmin = pg_catalog.xid(pg_catalog.pg_current_xact_id())"
    query = sql.SQL("SELECT x.ctid::text FROM {} AS x WHERE " + where).format(  # noqa: S608
        sql.Identifier("pggit", table)
    )
    return {str(tid) for (tid,) in conn.execute(query, (prefix,))}


def _referencing(conn: psycopg.Connection[Any], link: _Link, parents: set[str]) -> set[str]:
    query = sql.SQL(
        "SELECT c.ctid::text FROM {child} AS c WHERE ({ccols}) IN"
        " (SELECT {pcols} FROM {parent} AS p WHERE p.ctid = ANY(%s::tid[]))"
    ).format(
        child=sql.Identifier("pggit", link.child),
        parent=sql.Identifier("pggit", link.parent),
        ccols=sql.SQL(", ").join(sql.Identifier("c", c) for c in link.child_cols),
        pcols=sql.SQL(", ").join(sql.Identifier("p", c) for c in link.parent_cols),
    )
    return {str(tid) for (tid,) in conn.execute(query, (sorted(parents),))}


def _schemas(conn: psycopg.Connection[Any], prefix: str) -> list[str]:
    return [
        str(name)
        for (name,) in conn.execute(
            "SELECT nspname FROM pg_catalog.pg_namespace"
            " WHERE left(nspname, %s) = %s ORDER BY nspname",
            (len(prefix), prefix),
        )
    ]


def _closure(
    conn: psycopg.Connection[Any], prefix: str, *, own: bool = False
) -> dict[str, set[str]]:
    """ctids, by table, of the rows naming ``prefix`` and of every row hanging off them."""
    if conn.execute("SELECT to_regnamespace('pggit') IS NULL").fetchone() == (True,):
        return {}
    tables = [table for table in pggit_tables(conn) if table not in DERIVED_TABLES]
    rows = {table: _seed(conn, table, prefix, own=own) for table in tables}
    links = _links(conn, tables)
    for _ in range(MAX_ROUNDS):
        grew = False
        for link in links:
            parents = rows.get(link.parent, set())
            if not parents:
                continue
            found = _referencing(conn, link, parents) - rows[link.child]
            if found:
                rows[link.child] |= found
                grew = True
        if not grew:
            break
    return rows


def footprint(conn: psycopg.Connection[Any], prefix: str) -> Footprint:
    """What ``prefix`` has in the database now: rows per pggit table and schemas (only reads)."""
    _check_prefix(prefix)
    with conn.transaction():
        rows = _closure(conn, prefix)
        schemas = _schemas(conn, prefix)
    return Footprint(prefix, {t: len(ids) for t, ids in rows.items()}, schemas)


def audit(conn: psycopg.Connection[Any], prefix: str) -> Footprint:
    """Rows of each pggit table whose text names ``prefix``, and schemas named by it.

    Cheaper than :func:`footprint` (no references followed): the before/after comparison of
    a run's audit, where any row naming a scratch prefix is a leftover.
    """
    _check_prefix(prefix)
    with conn.transaction():
        has_pggit = conn.execute("SELECT to_regnamespace('pggit') IS NOT NULL").fetchone()
        tables = pggit_tables(conn) if has_pggit == (True,) else []
        rows = {t: len(_seed(conn, t, prefix)) for t in tables}
        schemas = _schemas(conn, prefix)
        roles = _roles(conn, prefix)
    return Footprint(prefix, rows, schemas, roles)


def purge(conn: psycopg.Connection[Any], prefix: str) -> Footprint:
    """Drop the schemas named ``prefix...`` and delete every pgGit row the prefix caused.

    One transaction: the schemas first (pgGit's drop trigger records the drops, naming the
    prefix, so they are swept too), then one DELETE over the closure. Returns what was removed.
    """
    _check_prefix(prefix)
    if not conn.autocommit:
        conn.rollback()
    with conn.transaction():
        roles = _drop_roles(conn, prefix)
        schemas = _schemas(conn, prefix)
        for schema in schemas:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        rows = _closure(conn, prefix, own=bool(schemas))
        targets = [(t, ids) for t, ids in sorted(rows.items()) if ids]
        if targets:
            parts = [
                sql.SQL("{name} AS (DELETE FROM {table} WHERE ctid = ANY(%s::tid[]))").format(
                    name=sql.Identifier(f"d{i}"), table=sql.Identifier("pggit", table)
                )
                for i, (table, _) in enumerate(targets)
            ]
            statement = sql.SQL("WITH {} SELECT 1").format(sql.SQL(", ").join(parts))
            conn.execute(statement, [sorted(ids) for _, ids in targets])
        if schemas or targets:
            _fold_derived(conn)
    return Footprint(prefix, {t: len(ids) for t, ids in rows.items()}, schemas, roles)


def _roles(conn: psycopg.Connection[Any], prefix: str) -> list[str]:
    return [
        str(name)
        for (name,) in conn.execute(
            "SELECT rolname FROM pg_catalog.pg_roles WHERE left(rolname, %s) = %s ORDER BY 1",
            (len(prefix), prefix),
        )
    ]


def _drop_roles(conn: psycopg.Connection[Any], prefix: str) -> list[str]:
    """Drop the roles named ``prefix...`` and what they own here; returns the ones dropped.

    A run killed in the middle of a security check leaves its throwaway role (it owns objects in
    the scratch schema only). Each role goes in a savepoint: one that cannot go (we may not
    drop roles, or it still owns objects in another database) stays, and the sweep goes on.
    """
    dropped: list[str] = []
    for name in _roles(conn, prefix):
        role = sql.Identifier(name)
        try:
            with conn.transaction():
                conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(role))
                conn.execute(sql.SQL("DROP ROLE {}").format(role))
        except psycopg.Error:
            continue
        dropped.append(name)
    return dropped


def _fold_derived(conn: psycopg.Connection[Any]) -> None:
    """Fold the embedded core's tree-hash parts (a no-op on a pgGit without them)."""
    found = conn.execute("SELECT to_regprocedure('pggit._tree_compact()') IS NOT NULL").fetchone()
    if found == (True,):
        conn.execute("SELECT pggit._tree_compact()")


def prefixes_in(conn: psycopg.Connection[Any], stem: str) -> set[str]:
    """Names starting with ``stem`` that schemas or pgGit branches carry now."""
    found: set[str] = set()
    for (name,) in conn.execute(
        "SELECT nspname FROM pg_catalog.pg_namespace WHERE left(nspname, %s) = %s",
        (len(stem), stem),
    ):
        found.add(str(name))
    if conn.execute("SELECT to_regclass('pggit.branches') IS NOT NULL").fetchone() == (True,):
        for (name,) in conn.execute(
            "SELECT name FROM pggit.branches WHERE left(name, %s) = %s", (len(stem), stem)
        ):
            found.add(str(name))
    return found


def live_sessions(conn: psycopg.Connection[Any], prefix: str) -> set[str]:
    """What follows ``prefix`` in the application_name of every session open now.

    Runs and checks runs name their sessions ``<prefix><run id>``: this says which are alive.
    """
    return {
        str(name)[len(prefix) :]
        for (name,) in conn.execute(
            "SELECT DISTINCT application_name FROM pg_stat_activity"
            " WHERE left(application_name, %s) = %s",
            (len(prefix), prefix),
        )
    }


@dataclass(frozen=True)
class Snapshot:
    """Row counts of pgGit's tables and positions of its sequences (schemas pggit, pggit_*)."""

    rows: dict[str, int] = field(default_factory=dict)
    #: ``schema.sequence`` -> the value nextval() last returned (0: never called).
    sequences: dict[str, int] = field(default_factory=dict)


def snapshot(conn: psycopg.Connection[Any]) -> Snapshot:
    """Count the rows of every pgGit table and read every pgGit sequence (only reads)."""
    relations = conn.execute(
        "SELECT n.nspname, c.relname, c.relkind::text FROM pg_catalog.pg_class c"
        " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE (n.nspname = 'pggit' OR left(n.nspname, 6) = 'pggit_')"
        " AND c.relkind IN ('r', 'p', 'S') AND NOT c.relispartition ORDER BY 1, 2"
    ).fetchall()
    rows: dict[str, int] = {}
    sequences: dict[str, int] = {}
    for schema, name, kind in relations:
        ident = sql.Identifier(str(schema), str(name))
        label = f"{schema}.{name}"
        if kind == "S":
            row = conn.execute(
                sql.SQL("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {}").format(
                    ident)
            ).fetchone()
            sequences[label] = int(row[0]) if row else 0
        else:
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone()
            rows[label] = int(row[0]) if row else 0
    return Snapshot(rows, sequences)


def residue(before: Snapshot, after: Snapshot) -> list[str]:
    """What a run left that no sweep can remove: rows that name no scratch area (pgGit's own
    triggers wrote them about the run's objects, e.g. timing metrics with a command tag only)
    and sequences the run advanced (a user's next ``create_branch`` gets a higher id)."""
    found = [
        f"{table}: +{count - before.rows[table]} rows naming no scratch area"
        for table, count in sorted(after.rows.items())
        if table in before.rows and count > before.rows[table]
    ]
    found += [
        f"sequence {name}: {'never used' if not before.sequences[name] else before.sequences[name]}"
        f" -> {value} (+{value - before.sequences[name]})"
        for name, value in sorted(after.sequences.items())
        if name in before.sequences and value > before.sequences[name]
    ]
    return found
