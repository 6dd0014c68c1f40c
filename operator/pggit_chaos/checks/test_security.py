"""Security checks: what pgGit's own objects let other roles do, and what they stop them doing.

Part of the checks suite run by :mod:`pggit_chaos.checks.runner` (category ``security``).
Two checks only read the catalog (``pg_proc``, ``pg_class``, ``pg_namespace`` and their ACLs):
SECURITY DEFINER functions of pgGit's schemas whose ``search_path`` anyone who may call them
can hijack, and pgGit objects that PUBLIC may write. The third is ``destructive``: it creates a
throwaway role (named with the scratch token), lets it run DDL in a scratch schema, and drops
the role and everything it owns on every path. Each finding names the object and the fix.

pgGit's schemas are ``pggit`` and every ``pggit_*`` schema (upstream pgGit spreads itself
over several).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pggit_chaos.checks.api import PgGitApi
from pggit_chaos.checks.support import Scratch, TargetInfo, connect

pytestmark = pytest.mark.security

Conn = psycopg.Connection[Any]

#: pgGit's schemas: ``pggit`` and ``pggit_*``.
_PGGIT_SCHEMAS = "(n.nspname = 'pggit' OR left(n.nspname, 6) = 'pggit_')"

#: Roles that may EXECUTE a function: PUBLIC (grantee 0) and every non-superuser other than
#: the owner; a superuser needs no grant and gains nothing from a hijack.
_EXECUTORS = (
    "SELECT coalesce(string_agg(CASE WHEN a.grantee = 0 THEN 'PUBLIC'"
    " ELSE quote_ident(r.rolname) END, ', ' ORDER BY a.grantee <> 0, r.rolname), '')"
    " FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a"
    " LEFT JOIN pg_roles r ON r.oid = a.grantee"
    " WHERE a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner"
    " AND (a.grantee = 0 OR NOT r.rolsuper)"
)


def _sample(items: list[str], limit: int = 6) -> str:
    more = f"; … ({len(items) - limit} more)" if len(items) > limit else ""
    return "; ".join(items[:limit]) + more


def _pinned_path(config: list[str] | None) -> list[str] | None:
    """The schemas of a function's ``SET search_path``, or None when it sets none."""
    for setting in config or []:
        name, _, value = setting.partition("=")
        if name.strip().lower() == "search_path":
            return [part.strip().strip('"') for part in value.split(",") if part.strip()]
    return None


def test_security_definer_functions_pin_search_path(conn: Conn, target: TargetInfo) -> None:
    """No SECURITY DEFINER function of pgGit is callable by others with a search_path they set.

    A SECURITY DEFINER function runs as its owner (usually the superuser who installed pgGit).
    Without ``SET search_path`` it resolves unqualified names — tables, functions, operators —
    through the CALLER's search_path: a role that may execute it puts a schema of its own first
    and has its own function run as the owner. A pinned path must also end with ``pg_temp``
    (else the caller's temporary tables come first) and hold no schema the caller may CREATE in.
    """
    rows = conn.execute(
        "SELECT p.oid::regprocedure::text, p.proconfig, (" + _EXECUTORS + "),"  # noqa: S608
        " pg_get_userbyid(p.proowner)"
        " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE p.prosecdef AND " + _PGGIT_SCHEMAS + " ORDER BY 1"
    ).fetchall()
    writable = {
        str(name)
        for (name,) in conn.execute(
            "SELECT nspname FROM pg_namespace n, aclexplode(coalesce(n.nspacl,"
            " acldefault('n', n.nspowner))) a LEFT JOIN pg_roles r ON r.oid = a.grantee"
            " WHERE a.privilege_type = 'CREATE' AND (a.grantee = 0 OR NOT r.rolsuper)"
            " AND a.grantee <> n.nspowner"
        )
    }
    findings: list[str] = []
    for signature, config, executors, owner in rows:
        if not executors:
            continue
        path = _pinned_path(config)
        fix = (
            f"fix: ALTER FUNCTION {signature} SET search_path = pg_catalog, pggit, pg_temp"
            f" (and REVOKE EXECUTE ON FUNCTION {signature} FROM PUBLIC unless callers need it)"
        )
        if path is None:
            problem = "has no pinned search_path"
        elif not path or path[-1] != "pg_temp":
            problem = f"pins search_path = {', '.join(path)} without pg_temp last"
        elif writable & set(path):
            problem = (
                f"pins search_path through {', '.join(sorted(writable & set(path)))},"
                " where others may CREATE"
            )
        else:
            continue
        findings.append(
            f"SECURITY DEFINER {signature} (runs as {owner}) {problem} and {executors}"
            f" may EXECUTE it: {fix}"
        )
    assert not findings, (
        f"{len(findings)} SECURITY DEFINER functions can be hijacked through search_path: "
        + _sample(findings)
    )


#: Table privileges that write, and what PUBLIC must not hold on a sequence or schema.
_RELATION_WRITES = ("INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


def test_no_pggit_object_writable_by_public(conn: Conn, target: TargetInfo) -> None:
    """PUBLIC may not write pgGit's records: its tables, sequences and schemas.

    Anyone who can connect could otherwise rewrite history, forge commits, advance sequences
    or plant objects in pgGit's schemas (where pgGit's own functions look names up).
    """
    relations = conn.execute(
        "SELECT c.oid::regclass::text, c.relkind::text,"  # noqa: S608 - fixed text
        " string_agg(DISTINCT a.privilege_type, ', ' ORDER BY a.privilege_type)"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,"
        " aclexplode(coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's'"
        " ELSE 'r' END::\"char\", c.relowner))) a"
        " WHERE " + _PGGIT_SCHEMAS + " AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')"
        " AND a.grantee = 0 AND (CASE WHEN c.relkind = 'S' THEN a.privilege_type IN"
        " ('UPDATE', 'USAGE') ELSE a.privilege_type = ANY(%s) END)"
        " GROUP BY 1, 2 ORDER BY 1",
        (list(_RELATION_WRITES),),
    ).fetchall()
    schemas = conn.execute(
        "SELECT n.nspname FROM pg_namespace n,"  # noqa: S608 - fixed text
        " aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a"
        " WHERE " + _PGGIT_SCHEMAS + " AND a.grantee = 0 AND a.privilege_type = 'CREATE'"
        " ORDER BY 1"
    ).fetchall()
    findings = [
        f"schema {sql.Identifier(str(name)).as_string(conn)}: PUBLIC may CREATE"
        f" (fix: REVOKE CREATE ON SCHEMA {sql.Identifier(str(name)).as_string(conn)} FROM PUBLIC)"
        for (name,) in schemas
    ]
    findings += [
        f"{'sequence' if kind == 'S' else 'view' if kind == 'v' else 'table'} {name}:"
        f" PUBLIC may {privileges} (fix: REVOKE {privileges} ON"
        f" {'SEQUENCE ' if kind == 'S' else ''}{name} FROM PUBLIC)"
        for name, kind, privileges in relations
    ]
    assert not findings, f"{len(findings)} pgGit objects PUBLIC may write: " + _sample(findings)


@contextlib.contextmanager
def _throwaway_role(target: TargetInfo, scratch: Scratch) -> Iterator[str]:
    """A NOLOGIN, non-superuser role owning the scratch schema and nothing else.

    Dropped on every path with everything it owns (``DROP OWNED``: the scratch schema and our
    objects in it, since it had no privilege anywhere else).
    """
    role = f"{scratch.token}_role"
    ident = sql.Identifier(role)
    with connect(target.dsn) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(
            ident))
        try:
            # Owner, not a GRANT: pgGit records a GRANT without naming the schema, and such a
            # row could not be told apart from the user's when the scratch area is cleaned up.
            admin.execute(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(
                sql.Identifier(scratch.schema), ident))
            yield role
        finally:
            admin.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(ident))
            admin.execute(sql.SQL("DROP ROLE {}").format(ident))


def _one_line(error: psycopg.Error) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


@pytest.mark.destructive
@pytest.mark.superuser
@pytest.mark.requires("objects")
def test_ordinary_role_can_run_ddl(target: TargetInfo, scratch: Scratch, pggit: PgGitApi) -> None:
    """With pgGit installed, a role that is no superuser can still CREATE, ALTER and DROP its
    own tables, and pgGit records them.

    pgGit's event triggers fire for every role. If their functions run as the caller, every
    write they make into pgGit's tables (and the sequences behind them) needs privileges an
    ordinary role lacks, and its DDL fails: the usual fix is SECURITY DEFINER functions with a
    pinned search_path (owned by the installing superuser), never grants to PUBLIC.
    """
    table = scratch.unique("role_ddl")
    ident = scratch.table(table)
    steps = [
        ("CREATE TABLE", sql.SQL("CREATE TABLE {} (id serial PRIMARY KEY, note text)").format(
            ident)),
        ("ALTER TABLE ADD COLUMN", sql.SQL("ALTER TABLE {} ADD COLUMN qty int").format(ident)),
        ("CREATE INDEX", sql.SQL("CREATE INDEX ON {} (qty)").format(ident)),
        ("DROP TABLE", sql.SQL("DROP TABLE {}").format(ident)),
    ]
    with _throwaway_role(target, scratch) as role, connect(target.dsn) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        tracked = None
        for label, statement in steps:
            try:
                conn.execute(statement)
            except psycopg.Error as exc:
                if exc.sqlstate != "42501":
                    raise  # not a privilege problem: the check could not run (an error)
                handlers = ", ".join(
                    f"{t.function}" for t in target.caps.tracking_triggers
                ) or "pgGit's event trigger functions"
                pytest.fail(
                    f"{label} by the ordinary role {role} fails with pgGit installed"
                    f" (SQLSTATE {exc.sqlstate}: {_one_line(exc)}): pgGit's event triggers run"
                    f" its functions as the caller. Fix: ALTER FUNCTION ... SECURITY DEFINER"
                    f" SET search_path = pg_catalog, pggit, pg_temp for {handlers} (owned by"
                    " the installing superuser), not grants on pgGit's tables to PUBLIC"
                )
            if label == "CREATE TABLE":
                conn.execute("RESET ROLE")
                tracked = pggit.tracked(conn, scratch.schema, table)
                conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        conn.execute("RESET ROLE")
    assert tracked is not None and tracked.is_active, (
        f"CREATE TABLE by the ordinary role {role} succeeded but pgGit recorded nothing"
    )
