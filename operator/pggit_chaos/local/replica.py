"""``primary-failover`` on one machine: a primary with one streaming standby, and its failover.

The local substrate builds the pair for a ``primary-failover`` experiment: the embedded server
is the primary (``wal_log_hints`` on, so a killed primary can be rewound), a
:class:`StandbyPostgres` is made from it with ``pg_basebackup`` (replication slot, standby
signal, ``primary_conninfo``) and, with ``replication: sync``, the primary waits for it
(``synchronous_standby_names``). Clients reach whichever is primary through one multi-host DSN
with ``target_session_attrs=read-write`` (:meth:`ReplicaPair.dsn`): libpq skips the server in
recovery, so the workload, the probes, the invariant checker and the checks follow a promotion
without knowing about it.

:class:`PrimaryFailover` is the fault: optionally hold the primary's WAL sender in the cgroup
freezer for ``standbyLag`` (what is committed meanwhile never reaches the standby: the sender
itself is paused, so nothing waits in a socket buffer the kernel of this machine would deliver
after the kill, as a dead node's would not), SIGKILL the primary with every backend, promote the
standby (``pg_promote()``) and wait until it accepts a write. Its revert brings the old primary
back as a standby of the new one (``pg_rewind``) or leaves it down, as the spec says.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any, Literal

import psycopg

from pggit_chaos.errors import FaultError
from pggit_chaos.faults.base import FaultEvidence, FaultIntent, Figure, WorkloadWindow
from pggit_chaos.local.cgroup import PodPause
from pggit_chaos.local.process import cluster_undo, postmasters_of
from pggit_chaos.local.server import (
    EmbeddedPostgres,
    EmbeddedPostgresError,
    _reap,
    _run_as_server_user,
)

#: ``application_name`` (and slot name) of the standby, as ``synchronous_standby_names`` names it.
STANDBY_NAME = "pggit_standby"
#: Slot on the new primary for the old primary once it is rewound into a standby.
REWOUND_NAME = "pggit_rewound"
#: Settings the primary needs in its ``postgresql.conf`` (read by pg_rewind's single-user run too).
PRIMARY_CONF = {"wal_log_hints": "on", "wal_keep_size": "64MB"}
#: Application name of the fault's own connections (never the workload's).
APPLICATION = "pggit-chaos-failover"

Replication = Literal["sync", "async"]
OldPrimary = Literal["rewind", "down"]


def prepare_primary(server: EmbeddedPostgres) -> None:
    """After ``init()``, before the first start: settings a primary with a standby needs."""
    with open(server.data_dir / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.write("\n# pggit-chaos primary-failover\n")
        conf.writelines(f"{key} = '{value}'\n" for key, value in PRIMARY_CONF.items())


def _lsn(text: str | None) -> int:
    """``'0/3000148'`` as a byte position."""
    if not text:
        return 0
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def _query(server: EmbeddedPostgres, sql: str, params: tuple[Any, ...] = (),
           timeout: float = 5.0) -> Any:
    """First column of the first row, over the server's unix socket."""
    with psycopg.connect(server.socket_dsn(), autocommit=True, connect_timeout=max(2, int(timeout)),
                         application_name=APPLICATION) as conn:
        row = conn.execute(sql, params).fetchone()
    return row[0] if row else None


def timeline(server: EmbeddedPostgres) -> int:
    """The timeline the server writes (a primary) or last received/replayed (a standby)."""
    walfile = _query(server, "SELECT CASE WHEN pg_is_in_recovery() THEN NULL "
                             "ELSE pg_walfile_name(pg_current_wal_lsn()) END")
    if walfile:
        return int(str(walfile)[:8], 16)
    return int(_query(server, "SELECT timeline_id FROM pg_control_checkpoint()"))


def in_recovery(server: EmbeddedPostgres) -> bool:
    return bool(_query(server, "SELECT pg_is_in_recovery()"))


class StandbyPostgres(EmbeddedPostgres):
    """A streaming standby: its data folder is a ``pg_basebackup`` of the primary."""

    def __init__(self, primary: EmbeddedPostgres, *, name: str = STANDBY_NAME,
                 settings: Mapping[str, object] | None = None) -> None:
        self.primary = primary
        self.name = name
        conninfo = (f"host={primary.host} port={primary.port} user=postgres "
                    f"application_name={name}")
        super().__init__(settings={**dict(settings or {}), "hot_standby": "on",
                                   "primary_conninfo": conninfo, "primary_slot_name": name},
                         host=primary.host)

    def init(self) -> None:
        """Folders as any embedded server's, then the data folder from the primary."""
        if self.initialised:
            return
        super().init()
        shutil.rmtree(self.data_dir)
        source = f"host={self.primary.socket_dir} port={self.primary.port} user=postgres"
        cmd = [*_run_as_server_user(), str(self.bindir / "pg_basebackup"), "-d", source,
               "-D", str(self.data_dir), "-X", "stream", "-C", "-S", self.name, "-R",
               "-c", "fast", "--no-sync"]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            self._abandon()
            raise EmbeddedPostgresError(f"pg_basebackup failed: {result.stderr.strip()[-500:]}")


class ReplicaPair:
    """The embedded primary and its standby; which one is primary changes with a failover."""

    def __init__(self, primary: EmbeddedPostgres, replication: Replication = "sync") -> None:
        self.primary = primary
        self.replication: Replication = replication
        self.standby = StandbyPostgres(primary, settings=primary.settings)

    @property
    def servers(self) -> list[EmbeddedPostgres]:
        return [self.primary, self.standby]

    def dsn(self, dbname: str) -> str:
        """Both servers, the writable one chosen by libpq (``target_session_attrs``)."""
        hosts = ",".join(server.host for server in self.servers)
        ports = ",".join(str(server.port) for server in self.servers)
        return (f"host={hosts} port={ports} user=postgres dbname={dbname} "
                "target_session_attrs=read-write")

    def start(self, timeout: float = 60.0) -> None:
        """Base backup, start the standby, wait until it streams (and is synchronous)."""
        self.standby.start()
        if self.replication == "sync":
            with psycopg.connect(self.primary.socket_dsn(), autocommit=True,
                                 application_name=APPLICATION) as conn:
                conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '\"{STANDBY_NAME}\"'")
                conn.execute("SELECT pg_reload_conf()")
        self.wait_streaming(self.primary, STANDBY_NAME, timeout,
                            sync=self.replication == "sync")

    @staticmethod
    def wait_streaming(primary: EmbeddedPostgres, name: str, timeout: float,
                       sync: bool = False) -> None:
        deadline = time.monotonic() + timeout
        state: Any = None
        while time.monotonic() < deadline:
            with contextlib.suppress(psycopg.Error):
                with psycopg.connect(primary.socket_dsn(), autocommit=True, connect_timeout=2,
                                     application_name=APPLICATION) as conn:
                    state = conn.execute(
                        "SELECT state, sync_state FROM pg_stat_replication "
                        "WHERE application_name = %s", (name,)).fetchone()
                if state and state[0] == "streaming" and (not sync or state[1] == "sync"):
                    return
            time.sleep(0.05)
        raise EmbeddedPostgresError(
            f"standby {name} not streaming{' synchronously' if sync else ''} from "
            f"{primary.host}:{primary.port} within {timeout:.0f}s (pg_stat_replication: {state})")

    def walsender_pid(self) -> int:
        pid = _query(self.primary, "SELECT pid FROM pg_stat_replication "
                     "WHERE application_name = %s", (STANDBY_NAME,))
        if pid is None:
            raise FaultError("primary-failover: the standby is not connected to the primary")
        return int(pid)

    def destroy(self) -> None:
        self.standby.destroy()


class PrimaryFailover:
    """SIGKILL the primary, promote the standby; revert rewinds the old primary or leaves it."""

    type = "primary-failover"
    recovery_from_injection = True

    def __init__(self, pair: ReplicaPair, dbname: str, *, standby_lag: float = 0.0,
                 old_primary: OldPrimary = "rewind", promote_timeout: float = 60.0,
                 intent_id: str | None = None) -> None:
        self.pair = pair
        self.dbname = dbname
        self.standby_lag = float(standby_lag)
        self.old_primary: OldPrimary = old_primary
        self.promote_timeout = promote_timeout
        self._id = intent_id or uuid.uuid4().hex[:12]
        self._intent: FaultIntent | None = None
        self._freezer: PodPause | None = None
        self._lock = threading.Lock()
        #: What inject and revert saw (the evidence's figures).
        self.killed_pid: int | None = None
        self.killed_at: float | None = None
        self.promoted_at: float | None = None
        self.writable_at: float | None = None
        self.timeline_before: int | None = None
        self.timeline_after: int | None = None
        self.unreplicated_bytes: int | None = None
        #: Commits waiting for the synchronous standby at the kill (never acknowledged).
        self.waiting_for_standby: int | None = None
        self.frozen_seconds = 0.0
        self.sender_frozen = False
        self.rewound = False
        self.old_primary_state = ""
        self.reverted = False

    # -- the protocol ----------------------------------------------------------------------------
    def check(self) -> None:
        if not (self.pair.primary.running and self.pair.standby.running):
            raise FaultError("primary-failover: the primary and its standby must both run")
        if self.standby_lag > 0 and self._freezer is None:
            # The sender's pid is read again at the injection (the standby may reconnect).
            self._freezer = PodPause(self.pair.walsender_pid, intent_id=self._id)

    def intent(self) -> FaultIntent:
        if self._intent is None:
            self.check()
            primary, standby = self.pair.primary, self.pair.standby
            lag = (f"hold the WAL sender in the freezer {self.standby_lag:g}s, "
                   if self.standby_lag > 0 else "")
            undo = (self._freezer.intent().undo if self._freezer is not None
                    else cluster_undo(standby))
            self._intent = FaultIntent(
                type=self.type,
                target=f"primary postmaster pid {primary.pid} ({primary.host}:{primary.port}), "
                       f"standby {standby.host}:{standby.port}",
                undo=undo,
                description=(f"{self.pair.replication} replication: {lag}SIGKILL the primary "
                             f"and its backends, promote the standby; old primary: "
                             f"{self.old_primary}"),
                id=self._id,
            )
        return self._intent

    def plan_lines(self) -> list[str]:
        primary, standby = self.pair.primary, self.pair.standby
        lines = [f"primary postmaster {primary.pid} on port {primary.port}, standby on port "
                 f"{standby.port} ({self.pair.replication} replication, slot {STANDBY_NAME})"]
        if self.standby_lag > 0:
            lines.append(f"freeze the primary's WAL sender for {self.standby_lag:g}s "
                         "(the standby falls behind)")
        lines += ["SIGSTOP then SIGKILL the primary's postmaster and all its children",
                  "promote the standby (pg_promote) and wait until it accepts a write",
                  "revert: rewind the old primary (pg_rewind) and start it as a standby of the "
                  "new primary" if self.old_primary == "rewind" else
                  "revert: leave the old primary down"]
        return lines

    def inject(self) -> None:
        with self._lock:
            self._inject()

    def _inject(self) -> None:
        self.check()
        self.intent()
        primary, standby = self.pair.primary, self.pair.standby
        process = primary.process
        if process is None or process.poll() is not None:
            raise FaultError("primary-failover: the primary is not running")
        self.timeline_before = timeline(primary)
        walsender: int | None = None
        if self._freezer is not None:
            walsender = self.pair.walsender_pid()
            self._freezer.inject()
            self.sender_frozen = self._freezer.frozen()
            frozen_at = time.monotonic()
            time.sleep(self.standby_lag)
            self.frozen_seconds = time.monotonic() - frozen_at
        with contextlib.suppress(psycopg.Error, FaultError):
            current = _query(primary, "SELECT pg_current_wal_lsn()::text")
            received = _query(standby, "SELECT pg_last_wal_receive_lsn()::text")
            self.unreplicated_bytes = max(0, _lsn(current) - _lsn(received))
            self.waiting_for_standby = int(_query(
                primary, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"))
        self.killed_pid = process.pid
        # The postmaster stops first (it forks nothing and notices nothing), a frozen sender is
        # killed and thawed (so it dies without sending), then everything goes at once.
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGSTOP)
        if walsender is not None and self._freezer is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(walsender, signal.SIGKILL)
            self._freezer.revert()
        primary.kill()
        self.killed_at = time.monotonic()
        if walsender is not None:
            deadline = time.monotonic() + 10
            while not _reap(walsender) and time.monotonic() < deadline:
                time.sleep(0.01)
        self._promote()

    def _promote(self) -> None:
        standby = self.pair.standby
        deadline = time.monotonic() + self.promote_timeout
        while True:  # as an operator does: retry while the standby does not take connections
            try:
                if in_recovery(standby):
                    _query(standby, "SELECT pg_promote(true, %s)", (int(self.promote_timeout),),
                           timeout=self.promote_timeout + 5)
                break
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline or not standby.running:
                    raise FaultError(f"primary-failover: promoting the standby failed: {exc}; "
                                     f"its log: {standby.log_tail(6)}") from exc
                time.sleep(0.1)
            except psycopg.Error as exc:
                raise FaultError(f"primary-failover: promoting the standby failed: {exc}") from exc
        self.promoted_at = time.monotonic()
        last = ""
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.pair.dsn(self.dbname), autocommit=True,
                                     connect_timeout=2, application_name=APPLICATION) as conn:
                    conn.execute("SELECT txid_current()")
                self.writable_at = time.monotonic()
                break
            except psycopg.Error as exc:
                last = str(exc).strip()
                time.sleep(0.02)
        else:
            raise FaultError(f"primary-failover: the promoted standby accepts no write: {last}")
        self.timeline_after = timeline(standby)

    def revert(self) -> None:
        """Thaw a frozen sender; make sure a primary runs; rewind the old one or leave it."""
        with self._lock:
            if self._freezer is not None:
                self._freezer.revert()
            if self.killed_pid is None or self.reverted:
                return  # nothing was killed: the pair is as it was
            standby = self.pair.standby
            if standby.running and self.promoted_at is None:
                self._promote()
            self.reverted = True
            if self.old_primary == "rewind":
                self._rewind()
            else:
                running = postmasters_of(str(self.pair.primary.data_dir))
                self.old_primary_state = ("left down" if not running
                                          else f"running: {running}")

    def _rewind(self) -> None:
        old, new = self.pair.primary, self.pair.standby
        with psycopg.connect(new.socket_dsn(), autocommit=True,
                             application_name=APPLICATION) as conn:
            exists = conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s",
                                  (REWOUND_NAME,)).fetchone()
            if not exists:
                conn.execute("SELECT pg_create_physical_replication_slot(%s, true)",
                             (REWOUND_NAME,))
            # A promotion does not wait for its checkpoint; until one completes the control file
            # still names the old timeline and pg_rewind would find "no rewind required".
            conn.execute("CHECKPOINT")
        source = f"host={new.socket_dir} port={new.port} user=postgres dbname=postgres"
        cmd = [*_run_as_server_user(), str(old.bindir / "pg_rewind"), "-D", str(old.data_dir),
               "--source-server", source, "-R", "--no-sync"]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise FaultError(f"primary-failover: pg_rewind of the old primary failed: "
                             f"{(result.stderr or result.stdout).strip()[-500:]}")
        old.settings.update({
            "primary_conninfo": f"host={new.host} port={new.port} user=postgres "
                                f"application_name={REWOUND_NAME}",
            "primary_slot_name": REWOUND_NAME,
            "hot_standby": "on",
        })
        old.start()
        try:
            ReplicaPair.wait_streaming(new, REWOUND_NAME, 60.0)
        except EmbeddedPostgresError as exc:
            raise FaultError(f"primary-failover: the rewound old primary does not stream: {exc}; "
                             f"its log: {old.log_tail(8)}; the new primary's log: "
                             f"{new.log_tail(8)}") from exc
        self.rewound = True
        self.old_primary_state = (f"rewound (pg_rewind), streaming from the new primary as "
                                  f"postmaster {old.pid}")

    def evidence(self, window: WorkloadWindow) -> FaultEvidence:
        """The old primary's PIDs are gone, the standby is a primary on a new timeline and took
        a write, and the old primary is rewound into a standby or down, as asked."""
        if self.killed_pid is None:
            return FaultEvidence(False, "primary-failover did not bite: nothing was killed")
        old, new = self.pair.primary, self.pair.standby
        alive = self.killed_pid in postmasters_of(str(old.data_dir)) and not self.rewound
        promoted = new.running and not in_recovery(new)
        old_recovery = in_recovery(old) if old.running else None
        figures: dict[str, Figure] = {
            "killed_postmaster_pid": self.killed_pid,
            "timeline_before": self.timeline_before or 0,
            "timeline_after": self.timeline_after or 0,
            "replication": self.pair.replication,
            "old_primary": self.old_primary_state or "unknown",
        }
        if self.killed_at is not None and self.promoted_at is not None:
            figures["kill_to_promoted_seconds"] = round(self.promoted_at - self.killed_at, 3)
        if self.killed_at is not None and self.writable_at is not None:
            figures["kill_to_write_seconds"] = round(self.writable_at - self.killed_at, 3)
        if self._freezer is not None:
            figures["sender_frozen_seconds"] = round(self.frozen_seconds, 3)
        if self.unreplicated_bytes is not None:
            figures["unreplicated_wal_bytes_at_kill"] = self.unreplicated_bytes
        if self.waiting_for_standby is not None:
            figures["commits_waiting_for_standby_at_kill"] = self.waiting_for_standby
        new_timeline = (self.timeline_after or 0) > (self.timeline_before or 0)
        old_ok = (self.rewound and old_recovery is True) if self.old_primary == "rewind" \
            else not old.running and not postmasters_of(str(old.data_dir))
        lag_ok = self._freezer is None or self.sender_frozen
        bit = not alive and promoted and new_timeline and self.writable_at is not None \
            and old_ok and lag_ok
        if bit:
            lag = (f" after {self.frozen_seconds:.1f} s with the WAL sender frozen "
                   f"({self.unreplicated_bytes or 0} WAL bytes not on the standby, "
                   f"{self.waiting_for_standby or 0} commit(s) waiting for it)"
                   if self._freezer is not None else "")
            summary = (f"primary postmaster {self.killed_pid} SIGKILLed{lag}; standby promoted "
                       f"(timeline {self.timeline_before} -> {self.timeline_after}), first write "
                       f"{figures.get('kill_to_write_seconds', 0):.2f} s after the kill; "
                       f"old primary {self.old_primary_state}")
        else:
            why = ("the killed primary is still running" if alive
                   else "the standby is not a primary" if not promoted
                   else "the timeline did not change" if not new_timeline
                   else "the WAL sender was not frozen" if not lag_ok
                   else f"the old primary is not {self.old_primary} "
                        f"({self.old_primary_state or 'unknown'})")
            summary = f"primary-failover did not bite: {why}"
        return FaultEvidence(bit, summary, figures)
