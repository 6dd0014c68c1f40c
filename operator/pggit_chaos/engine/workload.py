"""The recorded workload: N asyncio clients doing pgGit work while a fault runs.

The engine starts a :class:`Workload` before injecting a fault and stops it after recovery;
the benchmarks and tests drive it directly. Each client has its own connection and runs, at a
shared target rate (or as fast as it can), either ``pggit.commit_changes`` on the run's branch
with a unique message ``chaos:<run_id>:<client>:<seq>`` or tracked DDL (create, alter add
column, drop) on tables of its own in the run's schema. Every operation goes into the
:class:`~pggit_chaos.engine.history.History` as invoke → ok | fail | info, which the invariant
checker (``engine.invariants``) compares with the database afterwards.

Classification: an error the server raised as an ``ERROR`` on a live connection (constraint,
``statement_timeout``, ``lock_timeout``, cancel) aborted the statement's own transaction, so
the operation is ``fail``. A lost connection, a ``FATAL`` error, or the client-side timeout
leave the outcome unknown: ``info``.

No operation blocks longer than ``op_timeout``: a timer shuts the connection's socket down
when it expires (a psycopg cancel could hang on a partitioned network), and the client
reconnects with exponential backoff and a bounded connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import re
import socket
import uuid
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import psycopg
from psycopg import sql

from pggit_chaos.engine.history import Counts, History, OpF
from pggit_chaos.errors import ConfigurationError, PgGitDefect, TargetUnavailable

log = logging.getLogger(__name__)

#: Application name prefix of the workload's connections (``connection-kill`` targets them).
APPLICATION_NAME = "pggit-chaos-workload"
#: Prefix of the run's schema and branch; the checker and ``cleanup_run`` rely on it.
RUN_PREFIX = "chaos_run_"
_RUN_ID = re.compile(r"^[a-z0-9_]{1,40}$")
_MIX_KEYS = ("commit", "ddl")
#: SQLSTATE classes that mean the connection (not the statement) failed.
_CONNECTION_STATES = ("08", "57P")

_COMMIT_SQL = "SELECT pggit.commit_changes(%s, %s)"


def run_schema(run_id: str) -> str:
    """The schema holding the run's tables."""
    return f"{RUN_PREFIX}{run_id}"


def run_branch(run_id: str) -> str:
    """The pgGit branch the run's commits go to."""
    return f"{RUN_PREFIX}{run_id}"


def commit_message_prefix(run_id: str) -> str:
    """Every commit message of the run starts with this."""
    return f"chaos:{run_id}:"


def new_run_id() -> str:
    """A fresh run identifier (lower-case hex, safe in identifiers)."""
    return uuid.uuid4().hex[:12]


def validate_run_id(run_id: str) -> str:
    if not _RUN_ID.match(run_id):
        raise ConfigurationError(
            f"run id {run_id!r}: use 1-40 characters of a-z, 0-9 and _ (it names a schema)"
        )
    return run_id


def classify_error(exc: BaseException, conn: psycopg.AsyncConnection[Any] | None) -> str:
    """``fail`` if the server certainly rolled the statement back, else ``info``."""
    if not isinstance(exc, psycopg.Error):
        return "info"
    state = exc.sqlstate
    if state is None or state.startswith(_CONNECTION_STATES):
        return "info"
    severity = exc.diag.severity_nonlocalized or exc.diag.severity
    if severity is not None and severity != "ERROR":
        return "info"  # FATAL / PANIC: the session died with the statement
    if conn is None or conn.closed or conn.broken:
        return "info"
    return "fail"


#: What libpq says when the server has no connection slot left (SQLSTATE 53300); libpq does
#: not always carry the SQLSTATE of an error during the connection's startup.
_NO_SLOT_MESSAGES = ("too many clients", "remaining connection slots are reserved",
                     "too many connections")


def refused_for_slots(exc: BaseException) -> bool:
    """True for a connection the server refused because every slot was taken."""
    if getattr(exc, "sqlstate", None) == "53300":
        return True
    text = str(exc).lower()
    return any(message in text for message in _NO_SLOT_MESSAGES)


def _shutdown_socket(conn: psycopg.AsyncConnection[Any]) -> None:
    """Make every pending read/write on the connection fail now (without closing libpq's fd)."""
    with contextlib.suppress(Exception):
        fd = conn.pgconn.socket
        dup = socket.socket(fileno=os.dup(fd))
        try:
            dup.shutdown(socket.SHUT_RDWR)
        finally:
            dup.close()


@dataclass
class _Table:
    """A client-owned table known to exist (not abandoned after an unknown outcome)."""

    name: str
    next_column: int = 1


@dataclass
class _Client:
    """One workload client: its connection, counters and tables."""

    id: int
    rng: random.Random
    conn: psycopg.AsyncConnection[Any] | None = None
    cursor: psycopg.AsyncCursor[Any] | None = None
    seq: int = 0
    table_seq: int = 0
    tables: list[_Table] = field(default_factory=list)
    backoff: float = 0.0
    timed_out: bool = False
    in_flight: tuple[OpF, dict[str, str]] | None = None
    task: asyncio.Task[None] | None = None
    #: A client of a load spike (retired by :meth:`Workload.calm`).
    spike: bool = False
    retired: bool = False


@dataclass
class WorkloadStats:
    """What the workload did besides operations (for the journal)."""

    connects: int = 0
    connect_failures: int = 0
    timeouts: int = 0
    errors: list[str] = field(default_factory=list)
    refused: list[float] = field(default_factory=list)
    """When (on the history's clock) the server refused a connection for want of slots
    (SQLSTATE 53300: max_connections or the slots reserved for superusers reached)."""
    connected: int = 0
    """Workload connections open now."""
    peak_connected: int = 0
    """Most workload connections open at once."""


class Workload:
    """N asyncio clients recording pgGit commits and tracked DDL into a history."""

    def __init__(
        self,
        dsn: str,
        clients: int = 4,
        rate: float = 0.0,
        op_timeout: float = 5.0,
        mix: dict[str, int] | None = None,
        run_id: str | None = None,
        history: History | None = None,
        *,
        statement_timeout: float | None = None,
        max_tables: int = 3,
        max_columns: int = 12,
        seed: int | None = None,
    ) -> None:
        if clients < 1:
            raise ConfigurationError("workload clients must be at least 1")
        if rate < 0 or not math.isfinite(rate):
            raise ConfigurationError("workload rate must be 0 (as fast as possible) or positive")
        if op_timeout <= 0:
            raise ConfigurationError("workload op_timeout must be positive")
        weights = dict(mix) if mix is not None else {"commit": 3, "ddl": 1}
        unknown = sorted(set(weights) - set(_MIX_KEYS))
        if unknown:
            raise ConfigurationError(
                f"workload mix: unknown operation(s) {unknown}; use commit, ddl"
            )
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ConfigurationError("workload mix weights must be >= 0 with a positive sum")
        self.dsn = dsn
        self.clients = clients
        self.rate = rate
        self.op_timeout = op_timeout
        self.mix = {k: int(weights.get(k, 0)) for k in _MIX_KEYS}
        self.run_id = validate_run_id(run_id or new_run_id())
        self.history = history if history is not None else History()
        self.schema = run_schema(self.run_id)
        self.branch = run_branch(self.run_id)
        self.statement_timeout = (
            0.8 * op_timeout if statement_timeout is None else statement_timeout
        )
        self.max_tables = max(1, max_tables)
        self.max_columns = max(1, max_columns)
        self.stats = WorkloadStats()
        #: A defect of pgGit the setup met and got past (the run fails on it in the end).
        self.setup_finding = ""
        self._commit_share = self.mix["commit"] / (self.mix["commit"] + self.mix["ddl"])
        self._prefix = commit_message_prefix(self.run_id)
        self._seed = seed if seed is not None else random.randrange(2**31)
        self._clients: list[_Client] = []
        self._stop = asyncio.Event()
        self._stopping = False
        self._started = False
        self._interval = 1.0 / rate if rate > 0 else 0.0
        #: Bumped by every spike() and calm(): a spike scheduled before a calm never starts.
        self._spike_generation = 0
        self._next_slot = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._schema_ident = sql.Identifier(self.schema)
        self._connect_bound = max(1.0, op_timeout)

    # -- lifecycle ----------------------------------------------------------------------------
    async def setup(self) -> None:
        """Create the run's schema and branch (not recorded as operations)."""
        try:
            conn = await self._open(f"{APPLICATION_NAME}-setup", self._connect_bound + 1.0)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            raise TargetUnavailable(f"workload cannot connect: {exc}") from exc
        try:
            await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(self._schema_ident))
            await self._create_branch(conn)
        except psycopg.OperationalError as exc:
            raise TargetUnavailable(f"workload setup failed: {_first_line(exc)}") from exc
        except psycopg.errors.UndefinedFunction as exc:
            raise PgGitDefect(
                f"pgGit lacks what the workload needs: {_first_line(exc)}") from exc
        except psycopg.Error as exc:
            raise PgGitDefect(
                f"pggit.create_branch({self.branch!r}, 'main') fails twice: {_first_line(exc)}"
            ) from exc
        finally:
            await conn.close()

    async def _create_branch(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """The run's branch; a first call that fails while a second works (upstream's first
        create_branch after an install collides with 'main') is a finding, not the end."""
        statement = "SELECT pggit.create_branch(%s, 'main')"
        try:
            await conn.execute(statement, (self.branch,))
        except psycopg.OperationalError:
            raise
        except (psycopg.errors.UndefinedFunction, psycopg.errors.InsufficientPrivilege):
            raise
        except psycopg.Error as exc:
            await conn.execute(statement, (self.branch,))
            self.setup_finding = (
                f"pggit.create_branch({self.branch!r}, 'main') failed once and worked when"
                f" called again: {_first_line(exc)}"
            )

    async def start(self) -> None:
        """Set up the run's schema and branch, then start the clients."""
        if self._started:
            return
        await self.setup()
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._started = True
        for n in range(self.clients):
            client = _Client(id=n, rng=random.Random(self._seed * 1000 + n))
            client.task = asyncio.create_task(
                self._client_main(client), name=f"{APPLICATION_NAME}-{n}"
            )
            self._clients.append(client)

    async def drain(self) -> None:
        """Start no new operation and wait for the ones in flight (each bounded)."""
        self._stopping = True
        self._stop.set()
        tasks = [c.task for c in self._clients if c.task is not None and not c.task.done()]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self.op_timeout + self._connect_bound + 2)
        for task in pending:  # should not happen: every await in a client is bounded
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=2.0)
        for client in self._clients:
            if client.in_flight is not None:  # cancelled mid-operation
                f, value = client.in_flight
                self.history.record(client.id, "info", f, value, error="cancelled at stop")
                client.in_flight = None

    async def stop(self) -> None:
        """Drain, then close every connection."""
        if not self._started:
            return
        await self.drain()
        for client in self._clients:
            await self._drop_connection(client)
        self._started = False

    async def __aenter__(self) -> Workload:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._started and not self._stopping

    def counts(self) -> Counts:
        return self.history.counts()

    # -- clients ------------------------------------------------------------------------------
    # -- load spike (called by the load-spike fault, possibly from another thread) -------------
    def spike(self, clients: int, rate: float) -> None:
        """Run ``clients`` clients in all at ``rate`` operations per second until calm()."""
        loop = self._loop
        if loop is None or not self.running:
            raise ConfigurationError("load spike: the workload is not running")
        if clients < self.clients or rate < 0 or not math.isfinite(rate):
            raise ConfigurationError(
                f"load spike: {clients} clients at {rate:g} ops/s is no spike of a workload "
                f"of {self.clients} clients at {self.rate:g} ops/s")
        self._spike_generation += 1
        loop.call_soon_threadsafe(self._start_spike, clients, rate, self._spike_generation)

    def _start_spike(self, clients: int, rate: float, generation: int) -> None:
        if generation != self._spike_generation or not self.running:
            return  # calmed (or stopping) before the loop got to it
        self._interval = 1.0 / rate if rate > 0 else 0.0
        for n in range(len(self._clients), len(self._clients) + clients - self.clients):
            client = _Client(id=n, rng=random.Random(self._seed * 1000 + n), spike=True)
            client.task = asyncio.create_task(
                self._client_main(client), name=f"{APPLICATION_NAME}-{n}")
            self._clients.append(client)

    def calm(self) -> int:
        """Retire the spike's clients (each ends its operation in flight), restore the rate."""
        self._spike_generation += 1
        self._interval = 1.0 / self.rate if self.rate > 0 else 0.0
        retired = 0
        for client in self._clients:
            if client.spike and not client.retired:
                client.retired = True
                retired += 1
        return retired

    async def _client_main(self, client: _Client) -> None:
        try:
            await self._client_loop(client)
        finally:
            if client.retired:  # a spike's client: its slot goes back to the server now
                await self._drop_connection(client)

    async def _client_loop(self, client: _Client) -> None:
        while not (self._stopping or client.retired):
            try:
                if client.conn is None:
                    await self._connect(client)
                    continue
                if self._interval:
                    await self._pace()
                    if self._stopping or client.retired:
                        break
                if client.rng.random() < self._commit_share:
                    await self._commit(client)
                else:
                    await self._ddl(client)
            except Exception as exc:  # a bug, not a database outcome: keep the client alive
                self.stats.errors.append(f"client {client.id}: {type(exc).__name__}: {exc}")
                log.exception("workload client %s failed", client.id)
                if client.in_flight is not None:
                    f, value = client.in_flight
                    self.history.record(client.id, "info", f, value, error=repr(exc))
                    client.in_flight = None
                await self._drop_connection(client)

    async def _pace(self) -> None:
        """Shared schedule: one slot every ``1/rate`` seconds across all clients."""
        loop = self._loop
        assert loop is not None
        now = loop.time()
        slot = max(self._next_slot, now)
        self._next_slot = slot + self._interval
        if slot > now:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), slot - now)

    async def _sleep(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)

    async def _open(self, application_name: str, timeout: float) -> psycopg.AsyncConnection[Any]:
        """An autocommit connection, bounded by ``timeout`` even on a partitioned network."""
        return await asyncio.wait_for(
            psycopg.AsyncConnection.connect(
                self.dsn,
                autocommit=True,
                application_name=application_name,
                connect_timeout=max(2, math.ceil(self._connect_bound)),
            ),
            timeout=timeout,
        )

    def _connect_failed(self, client: _Client) -> None:
        """Count the failure and back off exponentially: 50 ms doubling up to 1 s."""
        self.stats.connect_failures += 1
        client.backoff = min(1.0, client.backoff * 2) if client.backoff else 0.05

    async def _connect(self, client: _Client) -> None:
        if client.backoff:
            await self._sleep(client.backoff * client.rng.uniform(0.5, 1.0))
            if self._stopping or client.retired:
                return
        try:
            conn = await self._open(f"{APPLICATION_NAME}-{client.id}", self._connect_bound)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            self._connect_failed(client)
            if refused_for_slots(exc):
                self.stats.refused.append(self.history.now())
            log.debug("client %s connect failed: %s", client.id, exc)
            return
        try:
            if self.statement_timeout > 0:
                await asyncio.wait_for(
                    conn.execute(
                        "SELECT set_config('statement_timeout', %s, false)",
                        (f"{max(1, int(self.statement_timeout * 1000))}ms",),
                    ),
                    timeout=self._connect_bound,
                )
        except (psycopg.Error, OSError, TimeoutError):
            self._connect_failed(client)
            _shutdown_socket(conn)
            with contextlib.suppress(Exception):
                await conn.close()
            return
        self.stats.connects += 1
        self.stats.connected += 1
        self.stats.peak_connected = max(self.stats.peak_connected, self.stats.connected)
        client.conn = conn
        client.cursor = conn.cursor()
        client.backoff = 0.0

    async def _drop_connection(self, client: _Client) -> None:
        conn = client.conn
        client.conn = None
        client.cursor = None
        if conn is None:
            return
        self.stats.connected -= 1
        _shutdown_socket(conn)
        with contextlib.suppress(Exception):
            await conn.close()
        if client.backoff == 0.0:
            client.backoff = 0.05

    def _expire(self, client: _Client) -> None:
        """Timer callback: the operation ran past ``op_timeout``; cut its connection."""
        client.timed_out = True
        self.stats.timeouts += 1
        if client.conn is not None:
            _shutdown_socket(client.conn)

    async def _execute(
        self, client: _Client, f: OpF, value: dict[str, str], query: Any, params: Any, fetch: bool
    ) -> None:
        """Run one recorded operation: invoke, execute under the timeout timer, complete."""
        cursor = client.cursor
        loop = self._loop
        assert cursor is not None and loop is not None
        history = self.history
        client.timed_out = False
        client.in_flight = (f, value)
        history.record(client.id, "invoke", f, value)
        timer = loop.call_at(loop.time() + self.op_timeout, self._expire, client)
        try:
            if params is None:
                await cursor.execute(query)
            else:
                await cursor.execute(query, params, prepare=True)
            result = None
            if fetch:
                row = await cursor.fetchone()
                result = None if row is None else str(row[0])
        except Exception as exc:
            timer.cancel()
            if client.timed_out:
                outcome, error = "info", f"client timeout after {self.op_timeout:g}s"
            else:
                outcome = classify_error(exc, client.conn)
                error = f"{getattr(exc, 'sqlstate', None) or type(exc).__name__}: {exc}".strip()
            history.record(client.id, outcome, f, value, error=error)  # type: ignore[arg-type]
            client.in_flight = None
            self._after(client, f, value, outcome)
            if outcome == "info":
                await self._drop_connection(client)
            return
        timer.cancel()
        history.record(client.id, "ok", f, value, result=result)
        client.in_flight = None
        self._after(client, f, value, "ok")
        if client.timed_out:  # the reply won the race against the timer: socket is gone
            await self._drop_connection(client)

    async def _commit(self, client: _Client) -> None:
        client.seq += 1
        message = f"{self._prefix}{client.id}:{client.seq}"
        value = {"branch": self.branch, "message": message}
        await self._execute(client, "commit", value, _COMMIT_SQL, (self.branch, message), True)

    async def _ddl(self, client: _Client) -> None:
        rng = client.rng
        tables = client.tables
        r = rng.random()
        if not tables or (len(tables) < self.max_tables and r < 0.4):
            client.table_seq += 1
            name = f"t{client.id}_{client.table_seq}"
            query = sql.SQL("CREATE TABLE {}.{} (id bigint, v text)").format(
                self._schema_ident, sql.Identifier(name)
            )
            value = {"schema": self.schema, "table": name}
            await self._execute(client, "create_table", value, query, None, False)
            return
        table = tables[rng.randrange(len(tables))]
        if r < 0.75 and table.next_column <= self.max_columns:
            column = f"c{table.next_column}"
            table.next_column += 1  # never reused, also after a failure
            query = sql.SQL("ALTER TABLE {}.{} ADD COLUMN {} integer").format(
                self._schema_ident, sql.Identifier(table.name), sql.Identifier(column)
            )
            value = {"schema": self.schema, "table": table.name, "column": column}
            await self._execute(client, "alter_table", value, query, None, False)
            return
        query = sql.SQL("DROP TABLE {}.{}").format(self._schema_ident, sql.Identifier(table.name))
        value = {"schema": self.schema, "table": table.name}
        await self._execute(client, "drop_table", value, query, None, False)

    def _after(self, client: _Client, f: OpF, value: dict[str, str], outcome: str) -> None:
        """Track which tables the client may still use (none whose state is unknown)."""
        if f == "drop_table" and outcome == "fail":
            # Never tried again: each DDL's key (kind, table, column) stays unique in the
            # history, as the checker needs (a failed DROP on a full disk, then a successful
            # one, would make the first look recorded though it failed).
            client.tables = [t for t in client.tables if t.name != value["table"]]
            return
        if f == "commit" or outcome == "fail":
            return
        name = value["table"]
        if f == "create_table":
            if outcome == "ok":
                client.tables.append(_Table(name))
            return
        if f == "drop_table" or outcome == "info":
            client.tables = [t for t in client.tables if t.name != name]


__all__ = [
    "APPLICATION_NAME",
    "RUN_PREFIX",
    "Workload",
    "WorkloadStats",
    "classify_error",
    "commit_message_prefix",
    "new_run_id",
    "refused_for_slots",
    "run_branch",
    "run_schema",
    "validate_run_id",
]


def _first_line(exc: BaseException) -> str:
    """The primary message of an SQL error: no query text, no HINT/CONTEXT lines."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0].strip()
