"""Low-level pgGit client: install the embedded core, probe a target, read its health.

Called by the CLI (`install-pggit`, connection checks), the checks suite (capabilities, to skip
what an upstream pgGit lacks), the workload/engine (health, connect_check) and the test
fixtures. Synchronous psycopg 3; every function opens and closes its own connection unless one
is handed in. The SQL contract is docs/pggit-core.md.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo

from pggit_chaos.errors import InsufficientPrivileges, TargetUnavailable

#: Version of the embedded core that :func:`install` installs (`pggit.install_info`, component
#: ``core``). Must equal the ``pggit-core-version`` marker and the INSERT in ``sql/pggit.sql``.
CORE_VERSION = "1.0.0"

#: Tables of the contract (schema ``pggit``).
TABLES: tuple[str, ...] = ("branches", "commits", "objects", "history", "install_info")
#: Functions of the contract (schema ``pggit``).
FUNCTIONS: tuple[str, ...] = (
    "generate_trinity_id",
    "create_branch",
    "commit_changes",
    "calculate_schema_hash",
    "get_version",
    "increment_version",
    "detect_drift",
    "health_check",
    "handle_ddl_command",
    "handle_sql_drop",
)
#: Event triggers of the contract, with the function each one must call.
EVENT_TRIGGERS: dict[str, str] = {
    "pggit_ddl_trigger": "handle_ddl_command",
    "pggit_drop_trigger": "handle_sql_drop",
}
#: Sequences of the contract.
SEQUENCES: tuple[str, ...] = ("trinity_seq",)


@dataclass(frozen=True)
class Signature:
    """One overload of a pgGit function, as the catalog describes it."""

    args: tuple[str, ...]
    """Argument types (``pg_get_function_identity_arguments`` split, names dropped)."""
    required: int
    """How many arguments have no default."""
    result: str
    """``pg_get_function_result``: ``text``, ``integer``, ``TABLE(major integer, ...)``."""
    columns: tuple[str, ...] = ()
    """Names of the result columns of a set-returning ``TABLE(...)`` function."""

    def accepts(self, count: int) -> bool:
        return self.required <= count <= len(self.args)


@dataclass(frozen=True)
class EventTriggerInfo:
    """An event trigger whose function lives in schema ``pggit`` (pgGit's DDL tracking)."""

    name: str
    event: str
    function: str
    enabled: bool


class NotSuperuser(InsufficientPrivileges):
    """Installing pgGit needs a superuser (event triggers) and the role is not one."""


@dataclass(frozen=True)
class HealthRow:
    """One row of ``pggit.health_check()``."""

    component: str
    status: str
    details: str

    @property
    def healthy(self) -> bool:
        return self.status == "healthy"


@dataclass(frozen=True)
class Capabilities:
    """What of the pgGit contract a database has (read from the catalogs, nothing called)."""

    schema: bool
    tables: frozenset[str] = frozenset()
    #: Columns of each present pggit table.
    columns: dict[str, frozenset[str]] = field(default_factory=dict)
    functions: frozenset[str] = frozenset()
    sequences: frozenset[str] = frozenset()
    #: Event trigger name -> enabled (present triggers only, any function).
    event_triggers: dict[str, bool] = field(default_factory=dict)
    #: ``pggit.install_info`` core version; None for an upstream pgGit or no pgGit.
    core_version: str | None = None
    database: str = ""
    #: Function name -> its overloads (argument and result types).
    signatures: dict[str, tuple[Signature, ...]] = field(default_factory=dict)
    #: Every event trigger calling a function in schema pggit, whatever its name.
    tracking_triggers: tuple[EventTriggerInfo, ...] = ()
    #: What ``pggit.version()`` says, when the installed pgGit has that function.
    version: str | None = None

    @property
    def shape(self) -> str:
        """``embedded`` (this project's core), ``upstream`` (pgGit's public API) or ``unknown``.

        Upstream pgGit keeps a ``content_hash`` on objects and links history to objects by
        ``object_id`` only; the embedded core records ``schema_hash`` and names in history.
        """
        if not self.installed:
            return "none"
        if self.embedded:
            return "embedded"
        objects = self.columns.get("objects", frozenset())
        history = self.columns.get("history", frozenset())
        if "content_hash" in objects or ("object_id" in history and "schema_name" not in history):
            return "upstream"
        return "unknown"

    @property
    def hash_column(self) -> str | None:
        """The objects column holding a table's recorded structure hash, if any: the embedded
        core's ``schema_hash``, upstream's ``content_hash``."""
        return next((c for c in ("schema_hash", "content_hash") if self.has(f"objects.{c}")), None)

    def describe(self) -> str:
        """One line for the top of a report: shape, version, functions and triggers found."""
        if not self.installed:
            return "no pgGit"
        version = self.core_version or self.version
        label = f"{self.shape} pgGit" + (f" {version}" if version else "")
        triggers = ", ".join(
            f"{t.name} ({t.event}{'' if t.enabled else ', disabled'})"
            for t in self.tracking_triggers
        )
        wanted = [f for f in FUNCTIONS if not f.startswith("handle_")]
        lacking = [f for f in wanted if f not in self.functions]
        return (
            f"{label}; event triggers: {triggers or 'none'}"
            + (f"; lacks {', '.join(lacking)}" if lacking else "")
        )

    def signature(self, function: str, nargs: int) -> Signature | None:
        """The overload of ``function`` callable with ``nargs`` arguments, if any."""
        for sig in self.signatures.get(function.removeprefix("pggit."), ()):
            if sig.accepts(nargs):
                return sig
        return None

    @property
    def installed(self) -> bool:
        """Schema ``pggit`` exists with the ``history`` and ``objects`` tables."""
        return self.schema and {"history", "objects"} <= self.tables

    @property
    def embedded(self) -> bool:
        """The core installed is this project's embedded core (install_info says so)."""
        return self.core_version is not None

    def has(self, name: str) -> bool:
        return self.missing(name) is None

    def missing(self, name: str) -> str | None:
        """None when ``name`` is present, else a one-line reason (for ``pytest.skip``).

        ``name`` is a contract name with or without the ``pggit.`` prefix: a table
        (``commits``), a column (``objects.version_major``), a function (``commit_changes``),
        a sequence (``trinity_seq``) or an event trigger (``pggit_ddl_trigger``; present AND
        enabled).
        """
        where = f"database {self.database}" if self.database else "the database"
        short = name.removeprefix("pggit.")
        if not self.schema:
            return f"{where} has no pgGit (schema pggit missing)"
        if short in EVENT_TRIGGERS or name in EVENT_TRIGGERS:
            enabled = self.event_triggers.get(short)
            if enabled is None:
                return f"{where} has no event trigger {short}"
            return None if enabled else f"event trigger {short} is disabled in {where}"
        if "." in short:
            table, column = short.split(".", 1)
            if table not in self.tables:
                return f"{where} has no table pggit.{table}"
            if column not in self.columns.get(table, frozenset()):
                return f"pggit.{table} in {where} has no column {column}"
            return None
        if short in self.tables or short in self.functions or short in self.sequences:
            return None
        kind = (
            "table"
            if short in TABLES
            else "function"
            if short in FUNCTIONS
            else "sequence"
            if short in SEQUENCES
            else "object"
        )
        return f"{where} has no {kind} pggit.{short}"


# -- DSN helpers ---------------------------------------------------------------------------
def mask_dsn(dsn: str) -> str:
    """The DSN as ``key=value`` pairs with the password replaced by ``***``."""
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return re.sub(r"(password\s*=\s*)\S+|(://[^:/@]*:)[^@]*@", _mask_match, dsn)
    if "password" in params:
        params["password"] = "***"
    return conninfo.make_conninfo("", **params)


def _mask_match(match: re.Match[str]) -> str:
    if match.group(1):
        return match.group(1) + "***"
    return str(match.group(2)) + "***@"


def describe_target(dsn: str) -> str:
    """``host:port/db`` of a DSN, for messages (never the password)."""
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return mask_dsn(dsn)
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    port = str(params.get("port") or "5432")
    db = str(params.get("dbname") or params.get("user") or "postgres")
    return f"{host}:{port}/{db}"


def _one_line(text: str, dsn: str) -> str:
    line = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    try:
        password = conninfo.conninfo_to_dict(dsn).get("password")
    except psycopg.ProgrammingError:
        password = None
    if password:
        line = line.replace(str(password), "***")
    return line or "unknown error"


#: getaddrinfo's EAI_AGAIN: the resolver gave no answer (a DNS server busy or restarting), which
#: is not an answer about the name: a connection is tried again for this long before it fails.
#: Seen on a real node, where cluster DNS answered nothing for about 20 s (one getaddrinfo
#: waits that long: 5 s per try, 2 tries, A and AAAA) and a runner's first connection failed;
#: the next experiment resolved the same name at once.
NAME_RESOLUTION_PATIENCE = 60.0
_NO_ANSWER_YET = "Temporary failure in name resolution"


def psycopg_connect(dsn: str, **params: Any) -> psycopg.Connection:
    """``psycopg.connect(dsn, **params)``, tried again while the resolver gives no answer
    (EAI_AGAIN), for up to :data:`NAME_RESOLUTION_PATIENCE` s; any other error, or a name the
    resolver does not know, is raised at once, as psycopg raises it."""
    deadline = time.monotonic() + NAME_RESOLUTION_PATIENCE
    while True:
        try:
            return psycopg.connect(dsn, **params)
        except psycopg.OperationalError as exc:
            if _NO_ANSWER_YET in str(exc) and time.monotonic() < deadline:
                time.sleep(1.0)
                continue
            raise


def _connect(dsn: str, timeout: float = 5.0, *, autocommit: bool = True) -> psycopg.Connection:
    try:
        return psycopg_connect(dsn, connect_timeout=max(1, round(timeout)),
                               autocommit=autocommit)
    except psycopg.ProgrammingError as exc:  # malformed DSN
        reason = _one_line(str(exc), dsn)
        raise TargetUnavailable(f"invalid DSN {mask_dsn(dsn)}: {reason}") from None
    except psycopg.Error as exc:
        raise TargetUnavailable(
            f"cannot connect to {describe_target(dsn)}: {_one_line(str(exc), dsn)}"
        ) from None


# -- install -------------------------------------------------------------------------------
def sql_path() -> Path:
    """Path of the embedded core's install script (``pggit_chaos/sql/pggit.sql``)."""
    return Path(str(resources.files("pggit_chaos") / "sql" / "pggit.sql"))


def install_sql() -> str:
    """Text of the install script."""
    return (resources.files("pggit_chaos") / "sql" / "pggit.sql").read_text(encoding="utf-8")


def install(dsn: str) -> str:
    """Install (or upgrade, or repair) the embedded pgGit core; return the installed version.

    Idempotent and safe to run from several sessions at once (the script takes an advisory
    lock). Raises :class:`TargetUnavailable` (one line) when the DSN cannot be reached and
    :class:`NotSuperuser` when the role may not create event triggers.
    """
    with _connect(dsn, timeout=10) as conn:
        row = conn.execute(
            "SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user"
        ).fetchone()
        if not row or not row[0]:
            user = conn.info.user
            raise NotSuperuser(
                f"installing pgGit into {describe_target(dsn)} needs a superuser (it creates event "
                f"triggers); role {user!r} is not one: connect as a superuser such as postgres"
            )
        try:
            conn.execute(install_sql().encode("utf-8"))
        except psycopg.errors.InsufficientPrivilege as exc:
            raise NotSuperuser(_one_line(str(exc), dsn)) from None
        except psycopg.Error as exc:
            raise TargetUnavailable(
                f"installing pgGit into {describe_target(dsn)} failed: {_one_line(str(exc), dsn)}"
            ) from None
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.execute("ROLLBACK")
        found = conn.execute(
            "SELECT version FROM pggit.install_info WHERE component = 'core'"
        ).fetchone()
    if found is None:
        raise TargetUnavailable(
            f"installing pgGit into {describe_target(dsn)} left no install_info row"
        )
    return str(found[0])


#: Everything the install script defines, as text: tables and their columns, constraints,
#: triggers, functions (by signature and body), event triggers and whether they are enabled,
#: the core version. Timestamps are left out: an unchanged install compares equal.
_INSTALL_FINGERPRINT = """
SELECT coalesce((SELECT string_agg(x, E'\\n' ORDER BY x) FROM (
    SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
           || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
           || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '') AS x
      FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
           AND NOT a.attisdropped
      LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
     WHERE c.relnamespace = 'pggit'::regnamespace
    UNION ALL
    SELECT 'relation ' || c.relname || ' ' || c.relkind::text FROM pg_class c
     WHERE c.relnamespace = 'pggit'::regnamespace
    UNION ALL
    SELECT 'constraint ' || conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint
     WHERE connamespace = 'pggit'::regnamespace
    UNION ALL
    SELECT 'trigger ' || t.tgname || ' ' || t.tgenabled::text || ' ' || pg_get_triggerdef(t.oid)
      FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
     WHERE c.relnamespace = 'pggit'::regnamespace AND NOT t.tgisinternal
    UNION ALL
    SELECT 'function ' || p.oid::regprocedure::text || ' ' || md5(p.prosrc)
           || ' ' || p.prosecdef::text || ' ' || coalesce(array_to_string(p.proconfig, ','), '')
      FROM pg_proc p WHERE p.pronamespace = 'pggit'::regnamespace
    UNION ALL
    SELECT 'event trigger ' || evtname || ' ' || evtenabled::text || ' ' || evtfoid::regproc::text
      FROM pg_event_trigger
) parts), '')
"""


def install_fingerprint(dsn: str) -> str:
    """What the install script defines in ``dsn``'s database, as one text ('' without pgGit)."""
    with _connect(dsn, timeout=10) as conn:
        row = conn.execute("SELECT to_regnamespace('pggit') IS NOT NULL").fetchone()
        if not row or not row[0]:
            return ""
        row = conn.execute("SELECT to_regclass('pggit.install_info') IS NOT NULL").fetchone()
        version = conn.execute(
            "SELECT version FROM pggit.install_info WHERE component = 'core'"
        ).fetchone() if row and row[0] else None
        found = conn.execute(_INSTALL_FINGERPRINT).fetchone()
    return f"core {version[0] if version else ''}\n{found[0] if found else ''}"


def install_or_update(dsn: str) -> tuple[str, bool]:
    """:func:`install`, and whether it changed anything (False: already up to date)."""
    before = install_fingerprint(dsn)
    version = install(dsn)
    return version, install_fingerprint(dsn) != before


# -- probes --------------------------------------------------------------------------------
def connect_check(dsn: str, timeout: float = 5) -> None:
    """Raise :class:`TargetUnavailable` (one line) unless ``dsn`` is reachable and has pgGit."""
    with _connect(dsn, timeout=timeout) as conn:
        caps = capabilities(conn)
    if not caps.installed:
        db = describe_target(dsn).rsplit("/", 1)[-1]
        raise TargetUnavailable(
            f"database {db} has no pgGit (schema pggit missing): "
            f"run `pggit-chaos install-pggit --dsn '{mask_dsn(dsn)}'`"
        )


def capabilities(conn: psycopg.Connection) -> Capabilities:
    """What of the contract ``conn``'s database has (from pg_class/pg_proc/pg_event_trigger)."""
    database = str(conn.info.dbname)
    with conn.cursor() as cur:
        cur.execute("SELECT to_regnamespace('pggit') IS NOT NULL")
        row = cur.fetchone()
        if not row or not row[0]:
            return Capabilities(schema=False, database=database)
        cur.execute(
            """
            SELECT c.relname, c.relkind, a.attname
              FROM pg_catalog.pg_class c
              LEFT JOIN pg_catalog.pg_attribute a
                ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             WHERE c.relnamespace = 'pggit'::regnamespace AND c.relkind IN ('r', 'p', 'S')
            """
        )
        tables: set[str] = set()
        sequences: set[str] = set()
        columns: dict[str, set[str]] = {}
        for relname, relkind, attname in cur.fetchall():
            if relkind == "S":
                sequences.add(relname)
                continue
            tables.add(relname)
            if attname is not None:
                columns.setdefault(relname, set()).add(attname)
        cur.execute(
            "SELECT p.proname, p.pronargs, p.pronargdefaults,"
            " pg_catalog.pg_get_function_result(p.oid),"
            " ARRAY(SELECT pg_catalog.format_type(t, NULL)"
            "       FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS a(t, n) ORDER BY n),"
            " CASE WHEN p.proargmodes IS NULL THEN ARRAY[]::text[] ELSE ARRAY("
            "   SELECT n FROM unnest(p.proargnames, p.proargmodes::text[]) AS a(n, m)"
            "    WHERE m = 't') END"
            " FROM pg_catalog.pg_proc p WHERE p.pronamespace = 'pggit'::regnamespace"
        )
        functions: set[str] = set()
        signatures: dict[str, list[Signature]] = {}
        for name, nargs, ndefaults, result, args, outs in cur.fetchall():
            functions.add(name)
            signatures.setdefault(name, []).append(
                Signature(
                    args=tuple(args),
                    required=int(nargs) - int(ndefaults),
                    result=str(result or ""),
                    columns=tuple(outs or ()),
                )
            )
        cur.execute(
            "SELECT e.evtname, e.evtevent, e.evtfoid::regproc::text, e.evtenabled <> 'D'"
            " FROM pg_catalog.pg_event_trigger e JOIN pg_catalog.pg_proc p ON p.oid = e.evtfoid"
            " WHERE p.pronamespace = 'pggit'::regnamespace ORDER BY e.evtname"
        )
        tracking = tuple(
            EventTriggerInfo(str(n), str(ev), str(fn), bool(on)) for n, ev, fn, on in cur.fetchall()
        )
        cur.execute(
            "SELECT e.evtname, e.evtenabled <> 'D' FROM pg_catalog.pg_event_trigger e"
            " WHERE e.evtname = ANY(%s)",
            (list(EVENT_TRIGGERS),),
        )
        triggers = {name: bool(enabled) for name, enabled in cur.fetchall()}
        core_version: str | None = None
        info_columns = columns.get("install_info", set())
        if "install_info" in tables and {"component", "version"} <= info_columns:
            cur.execute("SELECT version FROM pggit.install_info WHERE component = 'core'")
            found = cur.fetchone()
            core_version = str(found[0]) if found else None
        version: str | None = None
        if any(sig.accepts(0) and sig.result == "text" for sig in signatures.get("version", [])):
            try:
                with conn.transaction():
                    cur.execute("SELECT pggit.version()::text")
                    got = cur.fetchone()
                version = str(got[0]) if got and got[0] is not None else None
            except psycopg.Error:
                version = None
    if not conn.autocommit:
        conn.rollback()
    return Capabilities(
        schema=True,
        tables=frozenset(tables),
        columns={name: frozenset(cols) for name, cols in columns.items()},
        functions=frozenset(functions),
        sequences=frozenset(sequences),
        event_triggers=triggers,
        core_version=core_version,
        database=database,
        signatures={name: tuple(sigs) for name, sigs in signatures.items()},
        tracking_triggers=tracking,
        version=version,
    )


def health(dsn_or_conn: str | psycopg.Connection) -> list[HealthRow]:
    """Rows of ``pggit.health_check()``; raises TargetUnavailable when it cannot be called."""
    if isinstance(dsn_or_conn, str):
        with _connect(dsn_or_conn) as conn:
            return _health(conn, dsn_or_conn)
    return _health(dsn_or_conn, "")


#: How a pgGit's ``health_check()`` names its rows: the embedded core says ``component``,
#: upstream pgGit ``check_name`` (with ``message`` beside ``details``).
HEALTH_NAME_COLUMNS = ("component", "check_name")


def health_query(columns: Sequence[str]) -> str:
    """The SELECT over ``pggit.health_check()`` for a result with these column names."""
    name = next((c for c in HEALTH_NAME_COLUMNS if c in columns), None)
    detail = next((c for c in ("details", "message") if c in columns), None)
    if name is None or "status" not in columns:
        raise ValueError(f"health_check() returns ({', '.join(columns)}): no name/status column")
    details = f"{detail}::text" if detail else "''"
    return f"SELECT {name}::text, status::text, {details} FROM pggit.health_check()"  # noqa: S608


def health_sql(conn: psycopg.Connection) -> str:
    """The query over ``pggit.health_check()`` that fits the installed pgGit's result columns."""
    return health_query(_health_columns(conn))


def _health_columns(conn: psycopg.Connection) -> tuple[str, ...]:
    row = conn.execute(
        "SELECT CASE WHEN p.proargmodes IS NULL THEN ARRAY[]::text[] ELSE ARRAY("
        " SELECT n FROM unnest(p.proargnames, p.proargmodes::text[]) AS a(n, m) WHERE m = 't')"
        " END FROM pg_catalog.pg_proc p"
        " WHERE p.pronamespace = to_regnamespace('pggit') AND p.proname = 'health_check'"
        " AND p.pronargs = 0 LIMIT 1"
    ).fetchone()
    return tuple(row[0]) if row and row[0] else ("component", "status", "details")


def _health(conn: psycopg.Connection, dsn: str) -> list[HealthRow]:
    try:
        query = health_query(_health_columns(conn))
    except ValueError as exc:
        where = describe_target(dsn) if dsn else str(conn.info.dbname)
        raise TargetUnavailable(f"{where}: pggit.{exc}") from None
    try:
        rows = conn.execute(query).fetchall()
    except (psycopg.errors.UndefinedFunction, psycopg.errors.InvalidSchemaName):
        if not conn.autocommit:
            conn.rollback()
        where = describe_target(dsn) if dsn else str(conn.info.dbname)
        raise TargetUnavailable(
            f"{where} has no pggit.health_check(): pgGit missing or too old"
        ) from None
    if not conn.autocommit:
        conn.rollback()
    return [HealthRow(str(c), str(s), str(d)) for c, s, d in rows]
