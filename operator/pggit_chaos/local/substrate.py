"""The local substrate: experiments on one machine, against a throwaway PostgreSQL with pgGit.

The engine (``pggit-chaos run``) uses :class:`LocalSubstrate` through the
:class:`~pggit_chaos.engine.substrate.Substrate` protocol. ``prepare`` starts an
:class:`~pggit_chaos.local.server.EmbeddedPostgres` (inside a network namespace when the fault
is ``network-partition``; inside a memory cgroup of its own when it is ``memory-pressure``, so
that the limit covers all the server allocates, as a container's does; with libfaketime
preloaded and an offset file of its own when it is ``clock-skew``), installs pgGit and
records each as a resource in the state file, so ``pggit-chaos cleanup`` removes them if the
runner dies. With ``dsn=`` (``--dsn``) nothing is
started and only the SQL-level faults are allowed; the destructive ``index-corruption`` runs
only against the embedded throwaway server. In the embedded database ``prepare`` also creates
the ``amcheck`` extension (when the server has it) for the corruption checks: it is ours to
change, a user's database is not.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pggit_chaos.engine.substrate import Probe
from pggit_chaos.errors import FaultError, InvalidExperiment
from pggit_chaos.faults.base import Fault, FaultIntent
from pggit_chaos.faults.latency import LatencyRoute, NetworkLatency, open_route, shape_of
from pggit_chaos.faults.load import LoadSpike
from pggit_chaos.faults.sql import (
    ConnectionKill,
    LockContention,
    TriggerDisable,
)
from pggit_chaos.local.cgroup import CpuThrottle, MemoryPressure, PodPause, ServerCgroup
from pggit_chaos.local.clock import ClockSkew, start_with_faketime
from pggit_chaos.local.disk_pressure import DiskPressure, FaultFilesystem
from pggit_chaos.local.index_corruption import IndexCorruption
from pggit_chaos.local.netns import Netns, subnet_lock
from pggit_chaos.local.network import NetworkPartition
from pggit_chaos.local.process import PodKill, cluster_undo
from pggit_chaos.local.replica import PrimaryFailover, ReplicaPair, prepare_primary
from pggit_chaos.local.server import EmbeddedPostgres
from pggit_chaos.local.state import StateFile
from pggit_chaos.pggit import describe_target, mask_dsn
from pggit_chaos.probe import probe_database
from pggit_chaos.spec.model import MAX_SPIKE_CLIENTS, clock_offset_seconds

if TYPE_CHECKING:
    from pggit_chaos.spec import Experiment

#: Fault types that work on any database (the only ones allowed with ``--dsn``): the SQL-level
#: faults and load-spike (the workload's own clients multiplied).
SQL_FAULTS = ("connection-kill", "lock-contention", "trigger-disable", "load-spike")
#: Database the embedded run uses when the experiment names ``postgres``.
DEFAULT_DATABASE = "pggit"


class LocalSubstrate:
    """One machine: an embedded PostgreSQL (or an existing database via ``dsn``)."""

    def __init__(self, state: StateFile | None = None, dsn: str | None = None) -> None:
        self.state = state if state is not None else StateFile()
        self._external_dsn = dsn
        #: What the journal and report call the target: ``local`` (the embedded server), or the
        #: database of ``dsn`` as ``dsn host:port/db`` (never its password).
        self.name = "local" if dsn is None else f"dsn {describe_target(dsn)}"
        #: The embedded server once ``prepare`` has run (None with ``dsn=``).
        self.server: EmbeddedPostgres | None = None
        #: The server's network namespace (only for network-partition).
        self.netns: Netns | None = None
        #: The server's own memory cgroup (only for memory-pressure).
        self.cgroup: ServerCgroup | None = None
        #: The file libfaketime in the server reads its clock offset from (only clock-skew).
        self.clock_file: Path | None = None
        #: The filesystem of the server's WAL or data folder (only for disk-pressure).
        self.disk: FaultFilesystem | None = None
        #: The server and its streaming standby (only for primary-failover).
        self.replicas: ReplicaPair | None = None
        #: The workload's route through the latency proxy (only for network-latency).
        self.latency_route: LatencyRoute | None = None
        self.dbname = DEFAULT_DATABASE
        self._resources: list[FaultIntent] = []
        self._lock = threading.Lock()

    # -- target -------------------------------------------------------------------------------
    @property
    def embedded(self) -> bool:
        """True when this substrate owns an embedded server (no ``dsn=`` given)."""
        return self._external_dsn is None

    @property
    def dsn(self) -> str:
        if self._external_dsn is not None:
            return self._external_dsn
        if self.server is None:
            raise FaultError("the local substrate is not prepared: no embedded PostgreSQL yet")
        if self.replicas is not None:  # primary-failover: whichever server is writable
            return self.replicas.dsn(self.dbname)
        return self.server.dsn(self.dbname)

    @property
    def workload_dsn(self) -> str:
        """The DSN through the latency proxy for network-latency, else ``dsn``."""
        route = self.latency_route
        return route.workload_dsn if route is not None else self.dsn

    def _record_resource(self, intent: FaultIntent) -> None:
        self.state.record(intent)
        self._resources.append(intent)

    def _clear_resource(self, intent: FaultIntent) -> None:
        self.state.clear(intent.id)
        self._resources = [r for r in self._resources if r.id != intent.id]

    def prepare(self, experiment: Experiment) -> None:
        if not self.embedded or self.server is not None:
            return
        spec = experiment.spec
        types = {str(fault.type) for fault in spec.faults}
        try:
            host = "127.0.0.1"
            if "network-partition" in types:
                with subnet_lock():  # no other run picks the same subnet meanwhile
                    netns = Netns.plan()
                    self._record_resource(FaultIntent(
                        type="netns", target=netns.name, undo=netns.undo(),
                        description=f"network namespace of {experiment.name}"))
                    self.netns = netns
                    netns.create()
                host = netns.ns_address
            if "memory-pressure" in types:
                cgroup = ServerCgroup("memory")
                cgroup.check()
                self._record_resource(FaultIntent(
                    type="server-cgroup", target=str(cgroup.path), undo=cgroup.undo(),
                    description=f"memory cgroup of the server of {experiment.name}"))
                self.cgroup = cgroup
                cgroup.create()
            if "disk-pressure" in types:
                section: Any = _settings(spec, "disk-pressure")
                disk = FaultFilesystem(section.volume, section.local_size_mi)
                disk.check()
                self._record_resource(FaultIntent(
                    type="disk-filesystem", target=str(disk.path), undo=disk.undo(),
                    description=f"{section.local_size_mi} MiB tmpfs for the {section.volume} "
                                f"folder of {experiment.name}"))
                self.disk = disk
            server = EmbeddedPostgres(settings={**(self.disk.server_settings() if self.disk
                                                   else {}), **spec.local.postgresql},
                                      before_initdb=self.disk.before_initdb if self.disk
                                      else None, host=host,
                                      netns=self.netns.name if self.netns else None,
                                      cgroup=self.cgroup.path if self.cgroup else None)
            # Its folders are recorded before they exist: a runner killed in initdb leaves
            # nothing that `pggit-chaos cleanup` does not know of.
            server.reserve()
            self.server = server
            self._record_resource(FaultIntent(
                type="embedded-postgres", target=str(server.data_dir), undo=cluster_undo(server),
                description=f"throwaway cluster of {experiment.name}"))
            server.init()
            if "primary-failover" in types:
                prepare_primary(server)
            if "clock-skew" in types:
                self.clock_file = start_with_faketime(server)
            server.start()
            database = spec.target.database
            self.dbname = database if database != "postgres" else DEFAULT_DATABASE
            server.create_database(self.dbname)
            from pggit_chaos.checks.amcheck import create_amcheck
            from pggit_chaos.pggit import install

            install(server.dsn(self.dbname))
            create_amcheck(server.dsn(self.dbname))
            if "primary-failover" in types:
                self._start_standby(server, _settings(spec, "primary-failover"))
            if "network-latency" in types:
                # A thread of this process: it dies with the runner, nothing to record.
                self.latency_route = open_route(server.dsn(self.dbname))
        except BaseException:
            # The start's own error is the one to raise; what could not be removed stays
            # recorded and the runner's own close() reports it.
            with contextlib.suppress(FaultError):
                self.close()
            raise

    def _start_standby(self, server: EmbeddedPostgres, settings: Any) -> None:
        """primary-failover: a streaming standby of ``server`` (a resource of the run)."""
        pair = ReplicaPair(server, settings.replication)
        standby = pair.standby
        standby.reserve()
        self.replicas = pair
        self._record_resource(FaultIntent(
            type="embedded-postgres", target=str(standby.data_dir), undo=cluster_undo(standby),
            description="streaming standby of the throwaway cluster"))
        standby.init()
        pair.start()

    # -- faults -------------------------------------------------------------------------------
    def build_fault(self, experiment: Experiment) -> Fault:
        fault = experiment.spec.fault
        fault_type = str(fault.type)
        if not self.embedded and fault.destructive:
            raise InvalidExperiment([(
                "spec.fault.type",
                f"fault {fault_type} is destructive (it overwrites data that nothing restores): "
                "it runs only against the embedded throwaway PostgreSQL, never with --dsn",
            )])
        if not self.embedded and fault_type not in SQL_FAULTS:
            raise InvalidExperiment([(
                "spec.fault.type",
                f"fault {fault_type} needs the embedded PostgreSQL; with --dsn only "
                f"{', '.join(SQL_FAULTS)} are possible",
            )])
        built: Fault
        if fault_type in SQL_FAULTS:
            built = self._sql_fault(fault_type, fault.settings)
            built.check()
            return built
        server = self.server
        if server is None:
            raise FaultError(f"{fault_type}: prepare() has not started the embedded PostgreSQL")
        settings: Any = fault.settings
        if fault_type == "pod-kill":
            return PodKill(server, settings.grace_period_seconds, float(settings.restart_delay))
        if fault_type == "cpu-throttle":
            return CpuThrottle(lambda: server.pid, settings.cpu_percent)
        if fault_type == "memory-pressure":
            if self.cgroup is None:
                raise FaultError("memory-pressure: the server was not started in a memory cgroup "
                                 "of its own (prepare() ran for another fault type)")
            headroom = settings.headroom
            return MemoryPressure(self.cgroup, int(settings.limit),
                                  None if headroom is None else int(headroom))
        if fault_type == "pod-pause":
            return PodPause(lambda: server.pid)
        if fault_type == "network-partition":
            if self.netns is None:
                raise FaultError("network-partition: the server was not started in a network "
                                 "namespace (prepare() ran for another fault type)")
            return NetworkPartition(self.netns, settings.direction)
        if fault_type == "network-latency":
            if self.latency_route is None:
                raise FaultError("network-latency: prepare() did not start the latency proxy "
                                 "(it ran for another fault type)")
            return NetworkLatency(self.latency_route, shape_of(settings))
        if fault_type == "disk-pressure":
            if self.disk is None:
                raise FaultError("disk-pressure: the server's folder is not on a filesystem of "
                                 "its own (prepare() ran for another fault type)")
            built = DiskPressure(server, self.disk, settings.fill, settings.max_balloon_mi)
            built.check()
            return built
        if fault_type == "index-corruption":
            built = IndexCorruption(server, self.dbname, settings.index)
            built.check()
            return built
        if fault_type == "clock-skew":
            if self.clock_file is None:
                raise FaultError("clock-skew: the server was not started with libfaketime "
                                 "(prepare() ran for another fault type)")
            built = ClockSkew(self.dsn, self.clock_file, clock_offset_seconds(settings.offset),
                              settings.offset)
            built.check()
            return built
        if fault_type == "primary-failover":
            if self.replicas is None:
                raise FaultError("primary-failover: the server has no standby (prepare() ran "
                                 "for another fault type)")
            built = PrimaryFailover(self.replicas, self.dbname,
                                    standby_lag=settings.standby_lag.seconds,
                                    old_primary=settings.old_primary)
            built.check()
            return built
        raise InvalidExperiment([("spec.fault.type", f"unknown fault type {fault_type}")])

    def _sql_fault(self, fault_type: str, settings: Any) -> Fault:
        if fault_type == "load-spike":
            return LoadSpike(settings.clients_factor, settings.rate_factor, MAX_SPIKE_CLIENTS)
        if fault_type == "connection-kill":
            return ConnectionKill(self.dsn, float(settings.interval), settings.target_application)
        if fault_type == "lock-contention":
            return LockContention(self.dsn, settings.table, settings.mode)
        return TriggerDisable(self.dsn, list(settings.triggers))

    def plan(self, experiment: Experiment) -> list[str]:
        spec = experiment.spec
        fault_type = str(spec.fault.type)
        lines: list[str] = []
        if not self.embedded:
            lines.append(f"target: existing database {mask_dsn(self.dsn)}")
        elif self.server is None:
            settings = ", ".join(f"{k}={v}" for k, v in spec.local.postgresql.items())
            settings = settings or "defaults"
            where = " in a new network namespace (10.251.X.0/30 veth pair)" \
                if fault_type == "network-partition" else \
                " in a memory cgroup of its own" if fault_type == "memory-pressure" else \
                " and a streaming standby (pg_basebackup, replication slot)" \
                if fault_type == "primary-failover" else \
                " with libfaketime preloaded (its clock offset read from a file)" \
                if fault_type == "clock-skew" else ""
            lines.append(f"start an embedded PostgreSQL{where} with settings: {settings}")
            if fault_type == "disk-pressure":
                disk: Any = spec.fault.settings
                lines.append(f"its {disk.volume} folder on a {disk.local_size_mi} MiB tmpfs of "
                             "its own (1 MiB WAL segments)")
            database = spec.target.database
            if database == "postgres":
                database = DEFAULT_DATABASE
            lines.append(f"create database {database} and install pgGit")
        else:
            server = self.server
            lines.append(f"embedded PostgreSQL: postmaster pid {server.pid}, "
                         f"data {server.data_dir}, {server.host}:{server.port}, "
                         f"database {self.dbname}")
            if self.netns is not None:
                lines += self.netns.plan_lines()
        if not self.embedded and spec.fault.destructive:
            lines.append(f"refused: {fault_type} is destructive and runs only against the "
                         "embedded throwaway PostgreSQL")
            return lines
        if not self.embedded and fault_type not in SQL_FAULTS:
            lines.append(f"refused: {fault_type} needs the embedded PostgreSQL")
            return lines
        if self.server is None and self.embedded and spec.fault.destructive:
            index = getattr(spec.fault.settings, "index", None)
            which = f"pggit.{index}" if index else "the pgGit btree index with most entries"
            lines.append(f"inject {fault_type} (DESTRUCTIVE, nothing reverts it): stop the "
                         f"server cleanly, swap two entries of a leaf page of {which} on disk, "
                         "start it again; the checks are expected to Fail naming the index")
        elif self.server is None and self.embedded:
            section = spec.fault.settings.model_dump(by_alias=True, mode="json",
                                                     exclude_none=True)
            settings_text = ", ".join(f"{key} {_plain(value)}" for key, value in section.items())
            lines.append(f"inject {fault_type}" + (f": {settings_text}" if settings_text else ""))
        else:
            fault = self.build_fault(experiment)
            plan_lines = getattr(fault, "plan_lines", None)
            lines += [f"inject: {line}" for line in (plan_lines() if plan_lines else [])]
        lines.append(f"hold for {spec.duration}, then revert")
        return lines

    # -- intents ------------------------------------------------------------------------------
    def record_intent(self, intent: FaultIntent) -> None:
        self.state.record(intent)

    def clear_intent(self, intent: FaultIntent) -> None:
        self.state.clear(intent.id)

    # -- probes -------------------------------------------------------------------------------
    def probe(self, timeout: float) -> Probe:
        """Connect with a short timeout and run ``pggit.health_check()``; never raises.

        The probe runs in a thread: a frozen or partitioned server can leave an open
        connection waiting forever, and the caller must get an answer after ``timeout``.
        """
        try:
            dsn = self.dsn
        except FaultError as exc:
            return Probe(reachable=False, healthy=False, detail=str(exc))
        return probe_database(dsn, timeout)

    # -- teardown -----------------------------------------------------------------------------
    def close(self) -> None:
        """Remove every resource of the run: the servers, then their namespace, cgroup and
        filesystem. A resource's record is cleared only once it is gone; what could not be
        removed stays recorded (``pggit-chaos cleanup`` retries it) and is reported in one
        :class:`FaultError` after everything else was tried."""
        with self._lock:
            errors: list[str] = []

            def remove(label: str, action: Callable[[], object], kind: str,
                       target: str | None = None) -> bool:
                try:
                    action()
                except Exception as exc:
                    errors.append(f"{label}: {exc}")
                    return False
                for intent in [r for r in self._resources if r.type == kind
                               and (target is None or r.target == target)]:
                    self._clear_resource(intent)
                return True

            # What could not be removed is kept, so that a later close() tries it again.
            if self.latency_route is not None:
                self.latency_route.close()
                self.latency_route = None
            if self.replicas is not None and remove(
                    "standby PostgreSQL", self.replicas.destroy, "embedded-postgres",
                    str(self.replicas.standby.data_dir)):
                self.replicas = None
            if self.server is not None and remove(
                    "embedded PostgreSQL", self.server.destroy, "embedded-postgres",
                    str(self.server.data_dir)):
                self.server = None
            if self.netns is not None and remove("network namespace", self.netns.delete,
                                                 "netns"):
                self.netns = None
            if self.cgroup is not None and remove("memory cgroup", self.cgroup.remove,
                                                  "server-cgroup"):
                self.cgroup = None
            # After the server: nothing holds its files any more.
            if self.disk is not None and remove("disk-pressure filesystem", self.disk.remove,
                                                "disk-filesystem"):
                self.disk = None
            if errors:
                raise FaultError("; ".join(errors) + " (still recorded: run `pggit-chaos "
                                 "cleanup`)")


def _plain(value: object) -> str:
    """A setting as a person writes it: ``2s``, ``pggit_ddl_trigger and pggit_drop_trigger``."""
    if isinstance(value, list | tuple):
        items = [_plain(item) for item in value]
        return " and ".join(items) if len(items) <= 2 else ", ".join(items)
    if isinstance(value, dict):
        return ", ".join(f"{key} {_plain(item)}" for key, item in value.items())
    return str(value)


def _settings(spec: Any, fault_type: str) -> Any:
    """The settings section of the run's fault of ``fault_type`` (one it has)."""
    fault = spec.fault_of(fault_type)
    if fault is None:
        raise FaultError(f"the run has no {fault_type} fault")
    return fault.settings
