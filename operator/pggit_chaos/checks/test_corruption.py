"""Corruption checks: read-only integrity of everything pgGit recorded in the target database.

Part of the checks suite run by :mod:`pggit_chaos.checks.runner` (category ``corruption``).
These look at the user's own tables and pgGit rows and ONLY READ: the connection's
transactions are read-only (``default_transaction_read_only``), so a write would fail.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from pggit_chaos.checks.support import TargetInfo, quote_ident

pytestmark = pytest.mark.corruption

Conn = psycopg.Connection[Any]


def _MAIN_ONLY(target: TargetInfo) -> str:
    """Objects recorded for the live database: upstream pgGit also keeps copies per branch."""
    return " AND branch_name = 'main'" if target.has("objects.branch_name") else ""


def _sample(rows: list[Any], limit: int = 5) -> str:
    return ", ".join(str(tuple(r)) for r in rows[:limit]) + (" …" if len(rows) > limit else "")


@pytest.mark.requires("objects.is_active", "objects.schema_name", "objects.object_name")
def test_active_tracked_tables_exist(readonly_conn: Conn, target: TargetInfo) -> None:
    """Every active tracked table is in the catalog, or pgGit reports it as drift.

    A DROP that pgGit did not see (its event triggers were off) is legal only when
    ``detect_drift()`` reports the table; silently missing tables are corruption.
    """
    missing = readonly_conn.execute(
        "SELECT schema_name, object_name FROM pggit.objects"  # noqa: S608 - fixed text
        " WHERE is_active AND object_type::text = 'TABLE'"
        " AND to_regclass(quote_ident(schema_name) || '.' || quote_ident(object_name)) IS NULL"
        + _MAIN_ONLY(target)
    ).fetchall()
    if target.has("detect_drift"):
        reported = {
            (str(s), str(n))
            for s, n in readonly_conn.execute(
                "SELECT schema_name, object_name FROM pggit.detect_drift()"
            )
        }
        missing = [row for row in missing if (str(row[0]), str(row[1])) not in reported]
    assert not missing, (
        f"{len(missing)} active tracked tables do not exist and are not reported as drift: "
        f"{_sample(missing)}"
    )


@pytest.mark.requires("objects.schema_hash", "calculate_schema_hash")
def test_recorded_hash_matches_live_or_is_drift(readonly_conn: Conn, target: TargetInfo) -> None:
    """For each tracked table: recorded hash == live hash, or detect_drift() reports it."""
    tables = readonly_conn.execute(
        "SELECT schema_name, object_name, schema_hash FROM pggit.objects"
        " WHERE is_active AND object_type::text = 'TABLE' AND schema_hash IS NOT NULL"
        " AND to_regclass(quote_ident(schema_name) || '.' || quote_ident(object_name)) IS NOT NULL"
    ).fetchall()
    drifted: set[tuple[str, str]] = set()
    if target.has("detect_drift"):
        drifted = {
            (str(s), str(n))
            for s, n in readonly_conn.execute(
                "SELECT schema_name, object_name FROM pggit.detect_drift()"
            )
        }
    silent = []
    for schema, name, recorded in tables:
        row = readonly_conn.execute(
            "SELECT pggit.calculate_schema_hash(%s)",
            (f"{quote_ident(schema)}.{quote_ident(name)}",),
        ).fetchone()
        live = row[0] if row else None
        if live != recorded and (schema, name) not in drifted:
            silent.append((schema, name, recorded, live))
    assert not silent, (
        f"{len(silent)} tables differ from their record, unreported: {_sample(silent)}"
    )


@pytest.mark.requires("history.object_id", "objects")
def test_history_references_existing_objects(readonly_conn: Conn) -> None:
    """Every history row's object_id names a pggit.objects row."""
    orphans = readonly_conn.execute(
        "SELECT h.id, h.object_id FROM pggit.history h WHERE h.object_id IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM pggit.objects o WHERE o.id = h.object_id)"
    ).fetchall()
    assert not orphans, f"{len(orphans)} history rows reference missing objects: {_sample(orphans)}"


@pytest.mark.requires("branches.head_commit_hash", "commits.hash")
def test_branch_heads_point_at_commits(readonly_conn: Conn) -> None:
    """Every branch head is NULL or an existing commit."""
    dangling = readonly_conn.execute(
        "SELECT b.name, b.head_commit_hash FROM pggit.branches b"
        " WHERE b.head_commit_hash IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM pggit.commits c WHERE c.hash = b.head_commit_hash)"
    ).fetchall()
    assert not dangling, f"{len(dangling)} branch heads point at no commit: {_sample(dangling)}"


@pytest.mark.requires("commits.parent_commit_hash", "commits.hash")
def test_commit_parents_exist(readonly_conn: Conn) -> None:
    """Every commit's parent is NULL or an existing commit."""
    orphans = readonly_conn.execute(
        "SELECT c.hash, c.parent_commit_hash FROM pggit.commits c"
        " WHERE c.parent_commit_hash IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM pggit.commits p WHERE p.hash = c.parent_commit_hash)"
    ).fetchall()
    assert not orphans, f"{len(orphans)} commits have a missing parent: {_sample(orphans)}"


@pytest.mark.requires("commits.branch_id", "branches")
def test_commits_belong_to_branches(readonly_conn: Conn) -> None:
    """Every commit sits on an existing branch."""
    homeless = readonly_conn.execute(
        "SELECT c.hash, c.branch_id FROM pggit.commits c"
        " WHERE NOT EXISTS (SELECT 1 FROM pggit.branches b WHERE b.id = c.branch_id)"
    ).fetchall()
    assert not homeless, f"{len(homeless)} commits on missing branches: {_sample(homeless)}"


@pytest.mark.requires("commits.hash")
def test_no_duplicate_trinity_ids(readonly_conn: Conn) -> None:
    """No two commits share a Trinity ID."""
    dupes = readonly_conn.execute(
        "SELECT hash, count(*) FROM pggit.commits GROUP BY hash HAVING count(*) > 1"
    ).fetchall()
    assert not dupes, f"{len(dupes)} Trinity IDs used more than once: {_sample(dupes)}"


@pytest.mark.requires("branches.name")
def test_branch_names_unique(readonly_conn: Conn) -> None:
    """No two branches share a name."""
    dupes = readonly_conn.execute(
        "SELECT name, count(*) FROM pggit.branches GROUP BY name HAVING count(*) > 1"
    ).fetchall()
    assert not dupes, f"{len(dupes)} branch names used more than once: {_sample(dupes)}"


@pytest.mark.requires("objects.is_active")
def test_one_active_object_per_name(readonly_conn: Conn, target: TargetInfo) -> None:
    """At most one active pggit.objects row per (type, schema, name) — per branch, where
    pgGit keeps objects per branch."""
    per_branch = ", branch_name" if target.has("objects.branch_name") else ""
    dupes = readonly_conn.execute(
        "SELECT object_type::text, schema_name, object_name"  # noqa: S608 - fixed text
        f"{per_branch}, count(*) FROM pggit.objects WHERE is_active"
        f" GROUP BY object_type, schema_name, object_name{per_branch} HAVING count(*) > 1"
    ).fetchall()
    assert not dupes, f"{len(dupes)} objects tracked twice: {_sample(dupes)}"


def test_event_triggers_present_and_enabled(target: TargetInfo) -> None:
    """pgGit tracks DDL: an enabled event trigger calling a pggit function on ddl_command_end,
    and one on sql_drop (whatever their names)."""
    triggers = target.caps.tracking_triggers
    problems = []
    for event in ("ddl_command_end", "sql_drop"):
        on_event = [t for t in triggers if t.event == event]
        if not on_event:
            problems.append(f"no event trigger on {event} calls a pggit function")
        elif not any(t.enabled for t in on_event):
            names = ", ".join(t.name for t in on_event)
            problems.append(f"every pgGit trigger on {event} is disabled ({names})")
    assert not problems, "; ".join(problems)
