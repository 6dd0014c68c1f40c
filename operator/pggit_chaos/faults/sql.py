"""SQL-level faults, the same on every substrate: connection-kill, lock-contention, trigger-disable.

Built by the local substrate (and the Kubernetes one) from a DSN; each fault uses its own
connection with ``application_name`` ``pggit-chaos-fault-<intent id>``. Undo data never holds a
password: :func:`safe_conninfo` drops it, and ``cleanup`` then needs ``PGPASSWORD`` (or
``~/.pgpass``) to reconnect — libpq reads both by itself.
"""

from __future__ import annotations

import re
import threading
import uuid
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pggit_chaos.errors import FaultError, InsufficientPrivileges, TargetUnavailable
from pggit_chaos.faults.base import FaultIntent

#: Prefix of the application_name of every fault connection.
FAULT_APPLICATION = "pggit-chaos-fault"
#: Backends whose application_name starts with this are never killed (health probes).
PROBE_APPLICATION = "pggit-chaos-probe"

_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")
_LOCK_MODES = (
    "ACCESS SHARE", "ROW SHARE", "ROW EXCLUSIVE", "SHARE UPDATE EXCLUSIVE", "SHARE",
    "SHARE ROW EXCLUSIVE", "EXCLUSIVE", "ACCESS EXCLUSIVE",
)
_ENABLE = {
    "O": "ENABLE", "R": "ENABLE REPLICA", "A": "ENABLE ALWAYS", "D": "DISABLE",
}


def safe_conninfo(dsn: str) -> dict[str, Any]:
    """Connection data for the state file: the DSN without its password, and whether one was
    dropped (then ``cleanup`` needs PGPASSWORD or ~/.pgpass)."""
    params = conninfo_to_dict(dsn)
    had_password = params.pop("password", None) is not None
    return {"conninfo": make_conninfo(**{k: str(v) for k, v in params.items()}),
            "password_removed": had_password}


def connect_undo(undo: dict[str, Any], application: str) -> psycopg.Connection[Any]:
    """Reconnect from recorded undo data (password from the environment)."""
    try:
        return psycopg.connect(str(undo["conninfo"]), autocommit=True, connect_timeout=10,
                               application_name=application)
    except psycopg.Error as exc:
        hint = " (the recorded DSN had a password: set PGPASSWORD)" \
            if undo.get("password_removed") else ""
        raise FaultError(f"cannot connect to {undo['conninfo']}: {exc}{hint}".strip()) from exc


def _connect(dsn: str, application: str, autocommit: bool = True) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(dsn, autocommit=autocommit, connect_timeout=10,
                               application_name=application)
    except psycopg.Error as exc:
        raise TargetUnavailable(f"cannot connect to the target database: {exc}".strip()) from exc


def split_table(name: str) -> tuple[str, ...]:
    """``schema.table`` (or ``table``) validated and split into identifier parts."""
    if not _TABLE.match(name):
        raise FaultError(f"lock-contention: {name!r} is not a table name like schema.table")
    return tuple(name.split("."))


class ConnectionKill:
    """A thread that terminates the target's client backends every ``interval`` seconds."""

    type = "connection-kill"
    recovery_from_injection = False

    def __init__(self, dsn: str, interval: float = 2.0, target_application: str | None = None,
                 *, intent_id: str | None = None) -> None:
        if interval <= 0:
            raise FaultError("connection-kill: interval must be positive")
        self.dsn = dsn
        self.interval = float(interval)
        self.target_application = target_application
        self._id = intent_id or uuid.uuid4().hex[:12]
        self.application = f"{FAULT_APPLICATION}-{self._id}"
        self._intent: FaultIntent | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: PIDs of every backend terminated so far.
        self.killed: list[int] = []
        self.errors: list[str] = []

    def check(self) -> None:
        """pg_terminate_backend needs superuser or pg_signal_backend (for non-superusers)."""
        with _connect(self.dsn, self.application) as conn:
            row = conn.execute(
                "SELECT r.rolsuper OR pg_has_role(current_user, 'pg_signal_backend', 'MEMBER') "
                "FROM pg_roles r WHERE r.rolname = current_user"
            ).fetchone()
        if not row or not row[0]:
            raise InsufficientPrivileges(
                "connection-kill needs a superuser or a member of pg_signal_backend"
            )

    def intent(self) -> FaultIntent:
        if self._intent is None:
            who = f"application_name {self.target_application!r}" if self.target_application \
                else "every client backend of the database"
            self._intent = FaultIntent(
                type=self.type, target=who,
                undo={"kind": "thread", "what": "connection killer thread"},
                description=f"pg_terminate_backend on {who} every {self.interval:g}s",
                id=self._id,
            )
        return self._intent

    def _query(self) -> sql.Composed:
        where = [
            sql.SQL("backend_type = 'client backend'"),
            sql.SQL("pid <> pg_backend_pid()"),
            sql.SQL("datname = current_database()"),
            sql.SQL("coalesce(application_name, '') NOT LIKE {}").format(
                sql.Literal(PROBE_APPLICATION + "%")),
            sql.SQL("coalesce(application_name, '') NOT LIKE {}").format(
                sql.Literal(FAULT_APPLICATION + "%")),
        ]
        if self.target_application is not None:
            where.append(sql.SQL("application_name = {}").format(
                sql.Literal(self.target_application)))
        # Materialised first: PostgreSQL does not promise the order of WHERE conditions, and
        # pg_terminate_backend must only ever see rows every filter has passed.
        return sql.SQL(
            "WITH victims AS MATERIALIZED (SELECT pid FROM pg_stat_activity WHERE {}) "
            "SELECT pid FROM victims WHERE pg_terminate_backend(pid)"
        ).format(sql.SQL(" AND ").join(where))

    def plan_lines(self) -> list[str]:
        return [f"every {self.interval:g}s: {self._query().as_string(None)}"]

    def kill_once(self, conn: psycopg.Connection[Any]) -> list[int]:
        """One round of terminations; returns the PIDs terminated."""
        pids = [int(row[0]) for row in conn.execute(self._query()).fetchall()]
        self.killed.extend(pids)
        return pids

    def _loop(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = _connect(self.dsn, self.application)
                self.kill_once(conn)
            except (psycopg.Error, TargetUnavailable) as exc:
                self.errors.append(str(exc).strip())
                if conn is not None:
                    conn.close()
                conn = None
            self._stop.wait(self.interval)
        if conn is not None:
            conn.close()

    def inject(self) -> None:
        self.intent()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="pggit-chaos-connection-kill",
                                        daemon=True)
        self._thread.start()

    def revert(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None


class LockContention:
    """One connection holds ``LOCK TABLE <table> IN <mode> MODE`` until revert."""

    type = "lock-contention"
    recovery_from_injection = False

    def __init__(self, dsn: str, table: str = "pggit.objects", mode: str = "ACCESS EXCLUSIVE",
                 *, intent_id: str | None = None) -> None:
        self.parts = split_table(table)
        self.table = table
        self.mode = " ".join(mode.upper().split())
        if self.mode not in _LOCK_MODES:
            raise FaultError(f"lock-contention: unknown lock mode {mode!r}")
        self.dsn = dsn
        self._id = intent_id or uuid.uuid4().hex[:12]
        self.application = f"{FAULT_APPLICATION}-{self._id}"
        self._intent: FaultIntent | None = None
        self._conn: psycopg.Connection[Any] | None = None
        #: The backend holding the lock (set by inject).
        self.backend_pid: int | None = None

    def _statement(self) -> sql.Composed:
        return sql.SQL("LOCK TABLE {} IN {} MODE").format(
            sql.Identifier(*self.parts), sql.SQL(self.mode))

    def check(self) -> None:
        """The table must exist; LOCK needs a privilege on it (checked by trying, rolled back)."""
        with _connect(self.dsn, self.application, autocommit=False) as conn:
            try:
                conn.execute("SET LOCAL lock_timeout = '2s'")
                conn.execute(self._statement())
            except psycopg.errors.InsufficientPrivilege as exc:
                raise InsufficientPrivileges(
                    f"lock-contention needs a privilege on {self.table} that allows "
                    f"{self.mode} locks: {exc}".strip()) from exc
            except psycopg.errors.UndefinedTable as exc:
                raise FaultError(f"lock-contention: table {self.table} does not exist") from exc
            except psycopg.errors.LockNotAvailable:
                pass  # someone else holds it now: the privilege check passed
            finally:
                conn.rollback()

    def intent(self) -> FaultIntent:
        if self._intent is None:
            self._intent = FaultIntent(
                type=self.type, target=f"table {self.table}",
                undo={"kind": "terminate-backend", "application_name": self.application,
                      **safe_conninfo(self.dsn)},
                description=f"hold {self.mode} lock on {self.table}",
                id=self._id,
            )
        return self._intent

    def plan_lines(self) -> list[str]:
        return ["BEGIN", self._statement().as_string(None) + "  -- held until revert",
                "ROLLBACK"]

    def inject(self) -> None:
        self.intent()
        conn = _connect(self.dsn, self.application, autocommit=False)
        self._conn = conn
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        self.backend_pid = int(row[0]) if row else None
        try:
            conn.execute(self._statement())
        except psycopg.Error as exc:
            raise FaultError(f"lock-contention: {exc}".strip()) from exc

    def revert(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if not conn.closed:
                conn.rollback()
        except psycopg.Error:
            pass
        finally:
            conn.close()


class TriggerDisable:
    """Disable event triggers (pgGit's) for the duration; revert restores their states."""

    type = "trigger-disable"
    recovery_from_injection = False

    def __init__(self, dsn: str, triggers: list[str] | tuple[str, ...] = (
            "pggit_ddl_trigger", "pggit_drop_trigger"), *, intent_id: str | None = None) -> None:
        if not triggers:
            raise FaultError("trigger-disable: name at least one event trigger")
        self.dsn = dsn
        self.triggers = list(dict.fromkeys(triggers))
        self._id = intent_id or uuid.uuid4().hex[:12]
        self.application = f"{FAULT_APPLICATION}-{self._id}"
        self._intent: FaultIntent | None = None
        self._recorded: dict[str, str] | None = None

    def check(self) -> None:
        """A superuser connection (event triggers belong to superusers); triggers must exist."""
        with _connect(self.dsn, self.application) as conn:
            row = conn.execute(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
            if not row or not row[0]:
                raise InsufficientPrivileges("trigger-disable needs a superuser connection")
            self._states(conn)

    def _states(self, conn: psycopg.Connection[Any]) -> dict[str, str]:
        rows = conn.execute(
            "SELECT evtname, evtenabled FROM pg_event_trigger WHERE evtname = ANY(%s)",
            (self.triggers,),
        ).fetchall()
        states = {str(name): str(enabled) for name, enabled in rows}
        missing = [name for name in self.triggers if name not in states]
        if missing:
            raise FaultError(f"trigger-disable: no event trigger {', '.join(missing)} "
                             "(is pgGit installed?)")
        return states

    def intent(self) -> FaultIntent:
        """Reads and records each trigger's current state (``evtenabled``)."""
        if self._intent is None:
            with _connect(self.dsn, self.application) as conn:
                self._recorded = self._states(conn)
            self._intent = FaultIntent(
                type=self.type, target=f"event triggers {', '.join(self.triggers)}",
                undo={"kind": "event-triggers", "restore": dict(self._recorded),
                      **safe_conninfo(self.dsn)},
                description=f"ALTER EVENT TRIGGER ... DISABLE for {', '.join(self.triggers)}",
                id=self._id,
            )
        return self._intent

    def plan_lines(self) -> list[str]:
        return [f"ALTER EVENT TRIGGER {sql.Identifier(name).as_string(None)} DISABLE"
                for name in self.triggers]

    def inject(self) -> None:
        self.intent()
        with _connect(self.dsn, self.application) as conn:
            for name in self.triggers:
                conn.execute(sql.SQL("ALTER EVENT TRIGGER {} DISABLE").format(sql.Identifier(name)))

    def revert(self) -> None:
        if self._intent is None:
            return
        with _connect(self.dsn, self.application) as conn:
            restore_triggers(conn, self._intent.undo["restore"])


def restore_triggers(conn: psycopg.Connection[Any], restore: dict[str, str]) -> list[str]:
    """Put each event trigger back to its recorded ``evtenabled`` state; returns what it did."""
    done = []
    for name, state in restore.items():
        action = _ENABLE.get(state)
        if action is None:
            raise FaultError(f"unknown evtenabled state {state!r} for {name}")
        exists = conn.execute("SELECT 1 FROM pg_event_trigger WHERE evtname = %s", (name,)
                              ).fetchone()
        if not exists:
            done.append(f"event trigger {name} no longer exists")
            continue
        conn.execute(sql.SQL("ALTER EVENT TRIGGER {} " + action).format(sql.Identifier(name)))
        done.append(f"ALTER EVENT TRIGGER {name} {action}")
    return done


def revert_sql_intent(undo: dict[str, Any]) -> str:
    """Undo a SQL-level fault from its recorded data (``cleanup``)."""
    kind = undo["kind"]
    if kind == "thread":
        return f"nothing to undo: the {undo.get('what', 'thread')} died with its runner"
    if kind == "terminate-backend":
        with connect_undo(undo, PROBE_APPLICATION + "-cleanup") as conn:
            rows = conn.execute(
                "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s AND pid <> pg_backend_pid()",
                (str(undo["application_name"]),),
            ).fetchall()
        return f"terminated {len(rows)} backend(s) named {undo['application_name']}"
    if kind == "event-triggers":
        with connect_undo(undo, PROBE_APPLICATION + "-cleanup") as conn:
            return "; ".join(restore_triggers(conn, dict(undo["restore"])))
    raise FaultError(f"unknown SQL undo kind {kind!r}")
