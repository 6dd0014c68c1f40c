"""The kopf operator: only the registrations, settings, login and startup.

``pggit-chaos operator`` calls :func:`run_operator`. Every handler hands its work to
:class:`pggit_chaos.kube.handlers.Handlers` in a thread (the API client is synchronous) and
translates errors at this boundary: a handler asking to wait becomes ``kopf.TemporaryError``
with its delay, an API error a temporary one (the next event or timer tick retries).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import socket
import threading
from collections.abc import Callable, Collection
from typing import Any, TypeVar

import kopf

# kopf exports no name for the type of ``kopf.operator(identity=...)`` (a NewType of str).
from kopf._core.engines.peering import Identity
from prometheus_client import REGISTRY, CollectorRegistry

from pggit_chaos.config import Settings
from pggit_chaos.errors import ChaosError
from pggit_chaos.kube import names
from pggit_chaos.kube.client import ApiError, KubeClient
from pggit_chaos.kube.handlers import (
    MIRRORED_ANNOTATION,
    STOP_TIMEOUT,
    STOPPING_ANNOTATION,
    Handlers,
    Retry,
    needs_timer,
)
from pggit_chaos.kube.schedule_handlers import ScheduleHandlers, schedule_of_run
from pggit_chaos.metrics import start_metrics_server

__all__ = ["DEFAULT_METRICS_PORT", "SCHEDULE_INTERVAL", "TIMER_INTERVAL", "build_registry",
           "kopf_settings", "operate", "operator_identity", "run_operator"]

#: Port of /metrics when PGGIT_CHAOS_METRICS_PORT is not set (0 in the settings).
DEFAULT_METRICS_PORT = 8080
#: Seconds between two looks at a running experiment (runner, expiry, abort).
TIMER_INTERVAL = 5.0
#: Seconds between two looks whether a schedule's start is due (no API call unless it is).
SCHEDULE_INTERVAL = 1.0

_log = logging.getLogger("pggit_chaos.operator")
_T = TypeVar("_T")
_EXPERIMENTS = names.EXPERIMENTS  # (group, version, plural)
_SCHEDULES = names.SCHEDULES
_RUNNER = {names.ROLE_LABEL: names.ROLE_RUNNER}


async def _work(function: Callable[..., _T], *args: Any) -> _T:
    """Run one piece of the handlers' work in a thread; errors become kopf's."""
    try:
        return await asyncio.to_thread(function, *args)
    except Retry as exc:
        raise kopf.TemporaryError(str(exc), delay=exc.delay) from None
    except ApiError as exc:
        raise kopf.TemporaryError(str(exc), delay=2.0) from None
    except ChaosError as exc:
        raise kopf.TemporaryError(str(exc), delay=5.0) from None


def connection_info(client: KubeClient) -> kopf.ConnectionInfo:
    """kopf's credentials from the same configuration as the handlers' client."""
    config = client.configuration
    header = (config.get_api_key_with_prefix("BearerToken")
              or config.get_api_key_with_prefix("authorization"))
    parts = header.split(" ", 1) if header else []
    scheme, token = ((None, None) if not parts else (None, parts[0]) if len(parts) == 1
                     else (parts[0], parts[1]))
    return kopf.ConnectionInfo(
        server=str(config.host), ca_path=config.ssl_ca_cert, insecure=not config.verify_ssl,
        username=config.username or None, password=config.password or None, scheme=scheme,
        token=token, certificate_path=config.cert_file, private_key_path=config.key_file)


def kopf_settings(*, scanning: bool = True) -> kopf.OperatorSettings:
    """kopf's settings: our finalizer, state in our annotations, kopf's own Events quiet."""
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = names.FINALIZER
    prefix = f"kopf.{names.EXPERIMENTS[0]}"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=prefix)
    # The operator's own bookkeeping annotations are no change of the experiment.
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=prefix, ignored_fields=[
            ("metadata", "annotations", MIRRORED_ANNOTATION),
            ("metadata", "annotations", STOPPING_ANNOTATION)])
    settings.posting.level = logging.WARNING
    settings.scanning.disabled = not scanning
    settings.watching.server_timeout = 300
    return settings


def build_registry(handlers: Handlers, *, timer_interval: float = TIMER_INTERVAL,
                   sweep_interval: float | None = None,
                   schedule_interval: float = SCHEDULE_INTERVAL) -> kopf.OperatorRegistry:
    """The kopf registrations, each a thin hand-off to ``handlers`` (experiments) or to a
    :class:`ScheduleHandlers` on the same client (schedules)."""
    registry = kopf.OperatorRegistry()
    schedules = ScheduleHandlers(handlers.client, clock=handlers.clock)
    every = sweep_interval if sweep_interval is not None else handlers.settings.sweep_interval
    sweeper: dict[str, asyncio.Task[None]] = {}

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(handlers.client)

    async def schedules_forever() -> None:
        # One loop for every schedule, on the bodies the watch keeps: no API call unless a
        # start is due (a per-object kopf timer would need a finalizer on each schedule).
        async def start(namespace: str, name: str) -> None:
            try:
                await asyncio.to_thread(schedules.reconcile, namespace, name)
            except Exception as exc:  # retried at the next tick
                _log.warning("schedule %s/%s: %s", namespace, name, exc)

        while True:
            await asyncio.sleep(schedule_interval)
            # Schedules due at the same minute start side by side (the default thread pool
            # bounds how many at once), not one after the other.
            await asyncio.gather(*(start(namespace, name)
                                   for namespace, name in schedules.due_now()))

    async def sweep_forever() -> None:
        while True:
            await asyncio.sleep(every)
            try:
                for line in await asyncio.to_thread(handlers.sweep):
                    _log.info("sweep removed %s", line)
            except Exception as exc:  # a failed sweep is retried at the next interval
                _log.warning("sweep failed: %s", exc)

    @kopf.on.startup(registry=registry)
    async def startup(logger: kopf.Logger, **_: Any) -> None:
        counts = await _work(handlers.rebuild_active_faults)
        logger.info("active faults from status: %s", counts or "none")
        for line in await _work(handlers.sweep):
            logger.info("sweep removed %s", line)
        sweeper["task"] = asyncio.create_task(sweep_forever())
        sweeper["schedules"] = asyncio.create_task(schedules_forever())

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        for task in sweeper.values():
            task.cancel()
        sweeper.clear()

    @kopf.on.probe(id="activeFaults", registry=registry)
    def probe(**_: Any) -> dict[str, int]:
        return handlers.active_faults()

    @kopf.on.event(*_EXPERIMENTS, registry=registry)
    async def experiment_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        namespace = str(body.metadata.namespace)
        if type == "DELETED":
            handlers.forget(str(body.metadata.uid or ""))
        else:
            await _work(handlers.reconcile, namespace, str(body.metadata.name))
        owner = schedule_of_run(body)
        if owner is not None and schedules.run_needs_reconcile(type == "DELETED", dict(body)):
            # A run finished or went: its schedule's status and history follow at once (and
            # at the run's next event or the schedule's due start, should this fail).
            try:
                await _work(schedules.reconcile, namespace, owner)
            except kopf.TemporaryError as exc:
                _log.warning("schedule %s/%s: %s", namespace, owner, exc)
            else:
                schedules.run_end_reconciled(dict(body))

    @kopf.timer(*_EXPERIMENTS, interval=timer_interval, when=_timer_wanted, registry=registry)
    async def experiment_tick(body: kopf.Body, **_: Any) -> None:
        await _work(handlers.reconcile, str(body.metadata.namespace), str(body.metadata.name))

    @kopf.on.delete(*_EXPERIMENTS, registry=registry)
    async def experiment_deleted(body: kopf.Body, runtime: datetime.timedelta,
                                 logger: kopf.Logger,
                                 **_: Any) -> None:
        done = await _work(handlers.finalize, str(body.metadata.namespace),
                           str(body.metadata.name), runtime.total_seconds())
        logger.info("released: %s", done)

    @kopf.on.event(*_SCHEDULES, registry=registry)
    async def schedule_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        if type == "DELETED":
            # Its runs go with it (owner references); each one's finalizer reverts its fault.
            schedules.forget(dict(body))
            return
        schedules.remember(dict(body))
        if schedules.event_needs_reconcile(dict(body)):
            await _work(schedules.reconcile, str(body.metadata.namespace),
                        str(body.metadata.name))

    @kopf.on.event("batch", "v1", "jobs", labels=_RUNNER, registry=registry)
    async def runner_job_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        await _work(handlers.on_runner_object, dict(body))

    @kopf.on.event("", "v1", "pods", labels=_RUNNER, registry=registry)
    async def runner_pod_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        await _work(handlers.on_runner_object, dict(body))

    return registry


def operator_identity() -> str:
    """This operator's identity for kopf: ``POD_ID`` if set, else host name and process id.

    Passed to kopf explicitly because kopf's default asks ``getpass.getuser()``, which raises
    ``KeyError: 'getpwuid(): uid not found'`` for a uid with no passwd entry and no
    ``USER``/``LOGNAME`` -- the image's uid 65532, as any ``runAsUser`` without an entry.
    """
    pod = os.environ.get("POD_ID")
    if pod:
        return pod
    return f"pggit-chaos@{socket.gethostname()}/{os.getpid()}"


def _timer_wanted(body: kopf.Body, **_: Any) -> bool:
    return needs_timer(body)


async def operate(handlers: Handlers, *, namespaces: Collection[str] = (),
                  scanning: bool = True, liveness: str | None = None,
                  timer_interval: float = TIMER_INTERVAL, sweep_interval: float | None = None,
                  stop_flag: threading.Event | asyncio.Event | None = None,
                  ready_flag: threading.Event | asyncio.Event | None = None) -> None:
    """Run kopf with the registrations until ``stop_flag`` (or a signal)."""
    watched = list(namespaces) or handlers.settings.namespace_allowlist()
    await kopf.operator(
        registry=build_registry(handlers, timer_interval=timer_interval,
                                sweep_interval=sweep_interval),
        settings=kopf_settings(scanning=scanning), standalone=True,
        identity=Identity(operator_identity()),
        clusterwide=not watched, namespaces=watched, liveness_endpoint=liveness,
        stop_flag=stop_flag, ready_flag=ready_flag)


def run_operator(settings: Settings, kubeconfig: str | None = None,
                 namespaces: Collection[str] = (), liveness: str | None = None, *,
                 metrics_port: int | None = None, scanning: bool = True,
                 registry: CollectorRegistry = REGISTRY,
                 timer_interval: float = TIMER_INTERVAL, stop_timeout: float = STOP_TIMEOUT,
                 stop_flag: threading.Event | None = None,
                 ready_flag: threading.Event | None = None) -> int:
    """``pggit-chaos operator``: serve /metrics, run kopf until stopped; the exit code.

    ``metrics_port`` None means ``PGGIT_CHAOS_METRICS_PORT`` when set, else 8080; 0 turns the
    endpoint off. ``namespaces`` (else ``PGGIT_CHAOS_NAMESPACES``) limits what is watched;
    ``scanning=False`` serves only the resources and namespaces known at start (no list/watch
    on namespaces and CRDs).
    """
    client = KubeClient.from_environment(kubeconfig)
    handlers = Handlers(client, settings, registry, stop_timeout=stop_timeout)
    port = metrics_port if metrics_port is not None else (settings.metrics_port
                                                         or DEFAULT_METRICS_PORT)
    server = start_metrics_server(port, registry=registry)[0] if port else None
    if stop_flag is None:
        kopf.configure(verbose=settings.debug)
    try:
        asyncio.run(operate(handlers, namespaces=namespaces, scanning=scanning,
                            liveness=liveness, timer_interval=timer_interval,
                            stop_flag=stop_flag, ready_flag=ready_flag))
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    return 0
