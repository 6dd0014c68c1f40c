"""PostgreSQL's ``amcheck`` extension for the corruption checks: is it there, may we use it.

Read by the amcheck checks (:mod:`pggit_chaos.checks.test_amcheck`) to decide whether they
run or skip with a reason, and by the owners of throwaway servers (the local substrate's
embedded PostgreSQL, ``pggit-chaos checks`` without ``--dsn``, the tests), which call
:func:`create_amcheck` there. Nothing here creates the extension in a user's database on its
own: the checks use amcheck where it is installed and otherwise skip, saying what to run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

#: The skip reason when amcheck could be installed but is not.
NOT_INSTALLED = "amcheck is not installed: CREATE EXTENSION amcheck"
#: The skip reason when the server has no amcheck at all (contrib modules missing).
NOT_AVAILABLE = (
    "amcheck is not available on this server: install PostgreSQL's contrib modules "
    "(Debian: postgresql-contrib), then CREATE EXTENSION amcheck"
)


@dataclass(frozen=True)
class Amcheck:
    """Where amcheck is installed and which of its functions this connection may call."""

    schema: str | None
    """Schema holding the extension's functions; None when it is not installed."""
    available: bool
    """The server could install it (``pg_available_extensions`` lists it)."""
    functions: frozenset[str]
    """Installed functions this role may EXECUTE (``bt_index_check``, ``verify_heapam``...)."""
    installed_functions: frozenset[str]
    """Every installed amcheck function, whether this role may call it or not."""

    def unusable(self, function: str) -> str | None:
        """Why ``function`` cannot be called here (a skip reason), or None when it can."""
        if self.schema is None:
            return NOT_INSTALLED if self.available else NOT_AVAILABLE
        if function not in self.installed_functions:
            return (f"the installed amcheck has no {function} (PostgreSQL 14 or later has it: "
                    "ALTER EXTENSION amcheck UPDATE)")
        if function not in self.functions:
            return (f"this role may not EXECUTE {self.schema}.{function}: connect as a "
                    f"superuser or GRANT EXECUTE ON FUNCTION {self.schema}.{function} to it")
        return None

    def call(self, function: str) -> sql.Composable:
        """The schema-qualified function name, for a query."""
        assert self.schema is not None, NOT_INSTALLED
        return sql.Identifier(self.schema, function)


_FUNCTIONS = ("bt_index_check", "bt_index_parent_check", "verify_heapam")


def inspect_amcheck(conn: psycopg.Connection[Any]) -> Amcheck:
    """Read the catalog: is amcheck installed (where), available, callable by this role."""
    row = conn.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
        " WHERE e.extname = 'amcheck'"
    ).fetchone()
    available = conn.execute(
        "SELECT count(*) > 0 FROM pg_available_extensions WHERE name = 'amcheck'"
    ).fetchone()
    schema = None if row is None else str(row[0])
    installed: set[str] = set()
    callable_: set[str] = set()
    if schema is not None:
        for name, allowed in conn.execute(
            "SELECT p.proname, bool_or(has_function_privilege(p.oid, 'EXECUTE'))"
            " FROM pg_proc p WHERE p.pronamespace = %s::regnamespace AND p.proname = ANY(%s)"
            " GROUP BY p.proname",
            (schema, list(_FUNCTIONS)),
        ):
            installed.add(str(name))
            if allowed:
                callable_.add(str(name))
    return Amcheck(
        schema=schema,
        available=bool(available and available[0]),
        functions=frozenset(callable_),
        installed_functions=frozenset(installed),
    )


def create_amcheck(dsn: str) -> bool:
    """``CREATE EXTENSION IF NOT EXISTS amcheck`` where the server has it; True when installed.

    Only for databases this tool owns (an embedded throwaway server): in a user's database the
    checks never create extensions, they skip with :data:`NOT_INSTALLED`.
    """
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        if inspect_amcheck(conn).schema is not None:
            return True
        if not inspect_amcheck(conn).available:
            return False
        conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        return True
