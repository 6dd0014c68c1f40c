"""The ``network-latency`` fault: the workload's traffic delayed by the substrate's proxy.

Both substrates call :func:`open_route` in ``prepare`` for a ``network-latency`` experiment:
it starts a :class:`~pggit_chaos.faults.proxy.LatencyProxy` in the runner's process (locally
the ``pggit-chaos run`` process, in a cluster the runner pod) that forwards to the database
named by the DSN, and gives the DSN through it, which the engine's workload uses
(``Substrate.workload_dsn``). Probes, the invariant checker and the checks keep the direct
DSN. :class:`NetworkLatency` switches the proxy's delay on at injection and off at revert; the
proxy lives and dies with the runner, so a runner that dies leaves nothing to undo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pggit_chaos.errors import FaultError, InvalidExperiment
from pggit_chaos.faults.base import FaultEvidence, FaultIntent, Figure, WorkloadWindow
from pggit_chaos.faults.proxy import PASS_THROUGH, LatencyProxy, ProxyStats, Shape

if TYPE_CHECKING:
    from pggit_chaos.spec.model import NetworkLatency as NetworkLatencySettings

__all__ = ["LatencyRoute", "NetworkLatency", "describe_shape", "open_route", "shape_of",
           "upstream_of"]

#: Where the proxy listens: the runner's own loopback (nothing else reaches it).
PROXY_HOST = "127.0.0.1"
#: The ``undo`` of the fault's intent: the proxy is a thread of the runner and dies with it.
UNDO = {"kind": "thread", "what": "latency proxy in the runner's process"}


def upstream_of(dsn: str) -> tuple[str, int]:
    """The one TCP host and port a DSN connects to; a clear error for what cannot be proxied."""
    try:
        params = conninfo_to_dict(dsn)
    except Exception as exc:
        raise InvalidExperiment([("spec.target", f"network-latency: unreadable DSN: {exc}")]) \
            from exc
    host = str(params.get("hostaddr") or params.get("host") or "")
    port = str(params.get("port") or "5432")
    if "," in host or "," in port:
        raise InvalidExperiment([("spec.target", "network-latency: the DSN names several hosts; "
                                  "the latency proxy forwards to one")])
    if not host or host.startswith("/") or host.startswith("@"):
        raise InvalidExperiment([("spec.target", "network-latency needs a TCP connection to the "
                                  "database (the DSN connects through a unix socket)")])
    try:
        return host, int(port)
    except ValueError as exc:
        raise InvalidExperiment([("spec.target", f"network-latency: bad port {port!r}")]) from exc


def through(dsn: str, host: str, port: int) -> str:
    """``dsn`` connecting to ``host:port`` instead; ``host`` stays for TLS and ``.pgpass``."""
    params = {key: str(value) for key, value in conninfo_to_dict(dsn).items()
              if value is not None}
    params["hostaddr"] = host
    params["port"] = str(port)
    return make_conninfo(**params)


@dataclass
class LatencyRoute:
    """The proxy between the workload and the database, and the DSN that goes through it."""

    proxy: LatencyProxy
    upstream: str
    """``host:port`` of the database, as the proxy reaches it."""
    workload_dsn: str

    def close(self) -> None:
        self.proxy.close()


def open_route(dsn: str) -> LatencyRoute:
    """Start a pass-through proxy to the database of ``dsn``; the route says how to use it."""
    host, port = upstream_of(dsn)
    proxy = LatencyProxy(host, port, listen_host=PROXY_HOST)
    try:
        proxy.start()
    except OSError as exc:
        raise FaultError(f"network-latency: {exc}") from exc
    return LatencyRoute(proxy, f"{host}:{port}", through(dsn, PROXY_HOST, proxy.port))


def shape_of(settings: NetworkLatencySettings) -> Shape:
    """The proxy's shape for the experiment's ``networkLatency`` section."""
    bandwidth = settings.bandwidth
    return Shape(delay=float(settings.delay), jitter=float(settings.jitter),
                 bandwidth=None if bandwidth is None else int(bandwidth))


def describe_shape(shape: Shape) -> str:
    """``"50ms ± 10ms, at most 1048576 B/s each way"``."""
    text = f"{_ms(shape.delay)}"
    if shape.jitter:
        text += f" ± {_ms(shape.jitter)}"
    if shape.bandwidth is not None:
        text += f", at most {shape.bandwidth} B/s each way"
    return text


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:g}ms"


class NetworkLatency:
    """Hold the server's replies to the workload ``delay`` ± ``jitter`` (and cap bandwidth)."""

    type = "network-latency"
    recovery_from_injection = False

    def __init__(self, route: LatencyRoute, shape: Shape) -> None:
        if shape.passes_through:
            raise FaultError("network-latency: the shape adds nothing")
        self.route = route
        self.shape = shape
        self._intent = FaultIntent(
            type=self.type,
            target=f"the workload's connections to {route.upstream} (through the proxy on "
                   f"{PROXY_HOST}:{route.proxy.port})",
            undo=dict(UNDO),
            description=f"delay {describe_shape(shape)} in the runner's latency proxy",
        )
        self._before: ProxyStats | None = None
        self._after: ProxyStats | None = None

    def check(self) -> None:
        if not self.route.proxy.running:
            raise FaultError("network-latency: the latency proxy is not running")

    def intent(self) -> FaultIntent:
        return self._intent

    def plan_lines(self) -> list[str]:
        return [f"hold the replies of {self.route.upstream} to the workload "
                f"{describe_shape(self.shape)} in the proxy on {PROXY_HOST}:"
                f"{self.route.proxy.port} (the workload connects through it)"]

    def inject(self) -> None:
        self._before = self.route.proxy.stats()
        self.route.proxy.shape(self.shape)

    def revert(self) -> None:
        self.route.proxy.shape(PASS_THROUGH)
        if self._before is not None and self._after is None:
            self._after = self.route.proxy.stats()

    def evidence(self, window: WorkloadWindow) -> FaultEvidence:
        before, after = self._before, self._after
        if before is None or after is None:
            return FaultEvidence(bit=False, summary="network-latency: never injected")
        delayed = after.delayed_chunks - before.delayed_chunks
        figures: dict[str, Figure] = {
            "delayed_chunks": delayed,
            "bytes_to_client": after.bytes_to_client - before.bytes_to_client,
            "bytes_to_server": after.bytes_to_server - before.bytes_to_server,
            "connections": after.open_connections,
        }
        if delayed == 0 or after.held_max is None or after.held_min is None:
            return FaultEvidence(
                bit=False, figures=figures,
                summary="network-latency: the proxy held nothing (no traffic went through it "
                        f"while the delay was on); workload: {window.describe()}")
        mean = (after.held_total - before.held_total) / delayed
        figures.update(held_mean_ms=round(mean * 1000, 3),
                       held_min_ms=round(after.held_min * 1000, 3),
                       held_max_ms=round(after.held_max * 1000, 3))
        # The proxy measured its holds itself (read → written): at least the shape's
        # smallest delay, or it did not do what it was asked to.
        floor = max(0.0, self.shape.delay - self.shape.jitter)
        bit = after.held_max >= floor
        return FaultEvidence(
            bit=bit, figures=figures,
            summary=f"network-latency: {delayed} chunks held {mean * 1000:.1f} ms on average "
                    f"({after.held_min * 1000:.1f} to {after.held_max * 1000:.1f} ms; asked "
                    f"{describe_shape(self.shape)}); workload: {window.describe()}")
