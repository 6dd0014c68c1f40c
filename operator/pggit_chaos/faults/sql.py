"""SQL-level faults, the same on every substrate: connection-kill, lock-contention, trigger-disable.

Built by the local substrate (and the Kubernetes one) from a DSN; each fault uses its own
connection with ``application_name`` ``pggit-chaos-fault-<intent id>``. Undo data never holds a
password: :func:`safe_conninfo` drops it, and ``cleanup`` then needs ``PGPASSWORD`` (or
``~/.pgpass``) to reconnect — libpq reads both by itself.

Their evidence comes from the server's own views: ``pg_stat_database.sessions_killed`` and the
backends ``pg_terminate_backend`` signalled; sessions waiting in ``pg_locks``; the event
triggers' ``evtenabled`` and the relations created or altered while pgGit was not recording.
"""

from __future__ import annotations

import contextlib
import re
import threading
import uuid
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pggit_chaos.errors import FaultError, InsufficientPrivileges, TargetUnavailable
from pggit_chaos.faults.base import FaultEvidence, FaultIntent, Figure, WorkloadWindow

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
        self.rounds = 0
        self.errors: list[str] = []
        self._sessions_killed_before: int | None = None

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
        self.rounds += 1
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
        self._sessions_killed_before = _sessions_killed(self.dsn, self.application)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="pggit-chaos-connection-kill",
                                        daemon=True)
        self._thread.start()

    def revert(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def evidence(self, window: WorkloadWindow) -> FaultEvidence:
        """Backends ``pg_terminate_backend`` signalled, confirmed by the server's
        ``pg_stat_database.sessions_killed`` (PostgreSQL 14+) where it has it."""
        after = _sessions_killed(self.dsn, self.application)
        before = self._sessions_killed_before
        counted = after - before if after is not None and before is not None else None
        figures: dict[str, Figure] = {
            "terminated_backends": len(self.killed), "rounds": self.rounds,
            "errors": len(self.errors), "indeterminate_during": window.indeterminate,
        }
        confirm = ""
        if counted is not None:
            figures["sessions_killed"] = counted
            confirm = f" (pg_stat_database.sessions_killed +{counted})"
        if self.killed and (counted is None or counted > 0):
            return FaultEvidence(True, (
                f"terminated {len(self.killed)} backend(s) in {self.rounds} round(s){confirm}; "
                f"workload: {window.describe()}"), figures)
        why = (f"pg_terminate_backend signalled {len(self.killed)} backend(s), but the server "
               f"counted no killed session" if self.killed
               else f"no backend to terminate in {self.rounds} round(s)")
        if self.errors:
            why += f"; {len(self.errors)} error(s), first: {self.errors[0]}"
        return FaultEvidence(False, f"connection-kill did not bite: {why}", figures)


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
        #: Most sessions seen waiting for the lock at once (directly, or queued behind one
        #: that waits for it), the most waiting directly, and every waiting backend seen.
        self.peak_waiters = 0
        self.peak_direct_waiters = 0
        self.waiting_pids: set[int] = set()
        self.samples = 0
        self.sample_errors: list[str] = []
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

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
        self._stop.clear()
        self._sampler = threading.Thread(target=self._sample, name="pggit-chaos-lock-waiters",
                                         daemon=True)
        self._sampler.start()

    #: Seconds between two looks at pg_locks while the lock is held.
    SAMPLE_SECONDS = 0.1

    def _sample(self) -> None:
        """Count the sessions waiting in pg_locks because of the held lock: blocked by its
        holder, or by a session that is (a queue behind the lock)."""
        query = ("SELECT DISTINCT pid, pg_blocking_pids(pid) FROM pg_locks "
                 "WHERE NOT granted AND pid IS NOT NULL")
        conn: psycopg.Connection[Any] | None = None
        try:
            while not self._stop.is_set():
                try:
                    if conn is None or conn.closed:
                        conn = _connect(self.dsn, f"{self.application}-sampler")
                    blockers = {int(pid): {int(b) for b in by or ()}
                                for pid, by in conn.execute(query).fetchall()}
                    direct = {pid for pid, by in blockers.items() if self.backend_pid in by}
                    behind = set(direct)
                    grew = True
                    while grew:
                        more = {pid for pid, by in blockers.items() if by & behind} - behind
                        behind |= more
                        grew = bool(more)
                    self.samples += 1
                    self.waiting_pids |= behind
                    self.peak_waiters = max(self.peak_waiters, len(behind))
                    self.peak_direct_waiters = max(self.peak_direct_waiters, len(direct))
                except (psycopg.Error, TargetUnavailable) as exc:
                    self.sample_errors.append(str(exc).strip())
                    if conn is not None:
                        conn.close()
                    conn = None
                self._stop.wait(self.SAMPLE_SECONDS)
        finally:
            if conn is not None:
                conn.close()

    def evidence(self, window: WorkloadWindow) -> FaultEvidence:
        """Sessions seen in ``pg_locks`` waiting behind the held lock."""
        figures: dict[str, Figure] = {
            "peak_waiters": self.peak_waiters, "peak_direct_waiters": self.peak_direct_waiters,
            "sessions_that_waited": len(self.waiting_pids),
            "samples": self.samples, "ok_per_s_before": round(window.baseline_ok_per_s, 1),
            "ok_per_s_during": round(window.ok_per_s, 1),
        }
        lock = f"the {self.mode} lock on {self.table}"
        if self.peak_waiters > 0:
            return FaultEvidence(True, (
                f"up to {self.peak_waiters} session(s) at once waited in pg_locks because of "
                f"{lock} ({self.peak_direct_waiters} for it directly, "
                f"{len(self.waiting_pids)} in all); workload: {window.describe()}"), figures)
        why = f"nobody waited for {lock} in {self.samples} look(s) at pg_locks"
        if self.sample_errors:
            why += f" ({len(self.sample_errors)} failed, first: {self.sample_errors[0]})"
        return FaultEvidence(False, f"lock-contention did not bite: {why}", figures)

    def revert(self) -> None:
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join(timeout=30)
            self._sampler = None
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
        #: The first transaction ID after the injection (relations changed by later ones
        #: were created or altered while the triggers were off).
        self._boundary_xid: str | None = None
        self._history_before: int | None = None
        #: Read by revert before re-enabling: the triggers' states, the relations changed
        #: meanwhile, and the rows pgGit recorded meanwhile.
        self.seen_states: dict[str, str] = {}
        self.changed_relations: int | None = None
        self.history_rows_added: int | None = None
        self._capture_error: str | None = None

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
            row = conn.execute(
                "SELECT (pg_snapshot_xmax(pg_current_snapshot())::text::numeric "
                "% 4294967296)::text").fetchone()
            self._boundary_xid = str(row[0]) if row else None
            self._history_before = _history_rows(conn)
            for name in self.triggers:
                conn.execute(sql.SQL("ALTER EVENT TRIGGER {} DISABLE").format(sql.Identifier(name)))

    def _capture(self, conn: psycopg.Connection[Any]) -> None:
        """What the window left behind, read while the triggers are still disabled."""
        try:
            self.seen_states = self._states(conn)
            if self._boundary_xid is not None:
                row = conn.execute(
                    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE c.relkind IN ('r', 'p', 'v', 'm') "
                    "AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', "
                    "'pggit') AND age(c.xmin) < age(%s::xid)", (self._boundary_xid,)).fetchone()
                self.changed_relations = int(row[0]) if row else 0
            after = _history_rows(conn)
            if after is not None and self._history_before is not None:
                self.history_rows_added = after - self._history_before
        except (psycopg.Error, FaultError) as exc:
            self._capture_error = str(exc).strip()

    def revert(self) -> None:
        if self._intent is None:
            return
        with _connect(self.dsn, self.application) as conn:
            if self._boundary_xid is not None and self.changed_relations is None \
                    and self._capture_error is None:
                self._capture(conn)
            restore_triggers(conn, self._intent.undo["restore"])

    def evidence(self, window: WorkloadWindow) -> FaultEvidence:
        """The triggers read back disabled, and relations changed while pgGit was deaf."""
        if self._capture_error is not None:
            return FaultEvidence.unreadable(self.type, self._capture_error)
        disabled = sorted(name for name, state in self.seen_states.items() if state == "D")
        changed = self.changed_relations or 0
        figures: dict[str, Figure] = {
            "triggers_disabled": len(disabled), "relations_changed": changed,
            "history_rows_added": (self.history_rows_added
                                   if self.history_rows_added is not None else "unknown"),
        }
        if len(disabled) < len(self.triggers):
            on = sorted(set(self.triggers) - set(disabled))
            return FaultEvidence(False, (
                f"trigger-disable did not bite: {', '.join(on)} read back enabled"), figures)
        if changed == 0:
            return FaultEvidence(False, (
                "trigger-disable did not bite: no relation was created or altered while the "
                "triggers were off, so there is no untracked DDL to find"), figures)
        recorded = (f"; pgGit recorded {self.history_rows_added} history row(s) meanwhile"
                    if self.history_rows_added is not None else "")
        return FaultEvidence(True, (
            f"{', '.join(disabled)} read back disabled; {changed} relation(s) created or "
            f"altered while they were off (untracked DDL){recorded}"), figures)


def _history_rows(conn: psycopg.Connection[Any]) -> int | None:
    """Rows in ``pggit.history`` (None when this pgGit has no such table)."""
    try:
        with conn.transaction():
            row = conn.execute("SELECT count(*) FROM pggit.history").fetchone()
    except psycopg.Error:
        return None
    return int(row[0]) if row else None


def _sessions_killed(dsn: str, application: str) -> int | None:
    """``pg_stat_database.sessions_killed`` of the current database (PostgreSQL 14+)."""
    with contextlib.suppress(psycopg.Error, TargetUnavailable), \
            _connect(dsn, application) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT sessions_killed FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        return int(row[0]) if row and row[0] is not None else None
    return None


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
