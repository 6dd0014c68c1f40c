"""A small asyncio TCP proxy that can delay and rate-limit the traffic it carries.

The substrates (local and Kubernetes alike) put a :class:`LatencyProxy` between the workload's
clients and the database server for ``network-latency`` (``tc netem`` is not available on the
machines this runs on, and needs privileges a runner pod does not have). It runs its own event
loop in a daemon thread of the runner's process, so it is the same code in a local run and
inside the runner pod, and nothing outlives the process. It starts as a pass-through (no added
delay); :meth:`LatencyProxy.shape` switches a :class:`Shape` on (the fault's inject) and
``shape(PASS_THROUGH)`` off again (its revert).

What a shape does, per connection and direction, in order (bytes are never reordered, split
differently on purpose, or altered):

- ``delay`` ± ``jitter``: every chunk read from the server is held this long (uniform in
  ``[delay - jitter, delay + jitter]``, never below 0) before it is written to the client,
  as ``tc netem delay`` on the server's interface would: each round trip takes ``delay`` longer.
  A chunk is never written before the one read before it.
- ``bandwidth`` (bytes per second): each direction of the proxy as a whole (all connections
  together, like one link) carries at most this much; a chunk leaves once the link has
  "transmitted" it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import socket
import threading
from dataclasses import dataclass

__all__ = ["PASS_THROUGH", "LatencyProxy", "ProxyStats", "Shape"]

#: Bytes read from a socket at a time.
CHUNK = 65536
#: Chunks queued per direction of one connection before the proxy stops reading (backpressure).
QUEUE_CHUNKS = 64


@dataclass(frozen=True)
class Shape:
    """What the proxy does to the traffic: added delay, jitter (seconds), bandwidth (B/s)."""

    delay: float = 0.0
    """Seconds each chunk from the server is held before it goes to the client."""
    jitter: float = 0.0
    """The hold varies uniformly by up to this many seconds either way (never below 0)."""
    bandwidth: int | None = None
    """Bytes per second each direction carries at most (all connections together)."""

    def __post_init__(self) -> None:
        if self.delay < 0 or self.jitter < 0:
            raise ValueError("delay and jitter must not be negative")
        if self.bandwidth is not None and self.bandwidth <= 0:
            raise ValueError("bandwidth must be positive (None: no cap)")

    @property
    def passes_through(self) -> bool:
        """True when the shape adds nothing (the proxy forwards at once)."""
        return self.delay == 0 and self.jitter == 0 and self.bandwidth is None

    def hold(self, rng: random.Random) -> float:
        """One sample of the added delay (seconds)."""
        if self.jitter == 0:
            return self.delay
        return max(0.0, rng.uniform(self.delay - self.jitter, self.delay + self.jitter))


#: The shape that adds nothing: the proxy's state outside a fault.
PASS_THROUGH = Shape()


@dataclass
class ProxyStats:
    """What the proxy carried and how long it held chunks (a snapshot)."""

    connections: int = 0
    """Client connections accepted so far."""
    open_connections: int = 0
    bytes_to_server: int = 0
    bytes_to_client: int = 0
    delayed_chunks: int = 0
    """Chunks a shape held (delay or bandwidth) before they were written."""
    held_min: float | None = None
    """Shortest time a delayed chunk was held (read → written), seconds."""
    held_max: float | None = None
    held_total: float = 0.0
    """Sum of the holds, seconds (``held_total / delayed_chunks`` is the mean)."""
    upstream_failures: int = 0
    """Client connections closed because the server could not be reached."""

    @property
    def held_mean(self) -> float | None:
        """Mean hold of the delayed chunks, seconds."""
        return self.held_total / self.delayed_chunks if self.delayed_chunks else None

    def held(self, seconds: float) -> None:
        """Count one delayed chunk held ``seconds``."""
        self.delayed_chunks += 1
        self.held_total += seconds
        self.held_min = seconds if self.held_min is None else min(self.held_min, seconds)
        self.held_max = seconds if self.held_max is None else max(self.held_max, seconds)


class _Link:
    """One direction of the proxy as a link of limited bandwidth (shared by connections)."""

    def __init__(self) -> None:
        self.free_at = 0.0

    def transmit(self, now: float, size: int, bandwidth: int | None) -> float:
        """When a chunk of ``size`` bytes offered at ``now`` has been carried."""
        if bandwidth is None:
            return now
        start = max(now, self.free_at)
        self.free_at = start + size / bandwidth
        return self.free_at


class LatencyProxy:
    """Listens on ``listen_host`` (an ephemeral port by default), forwards to the upstream.

    Thread-safe from the outside: :meth:`start`, :meth:`shape`, :meth:`stats`, :meth:`close`
    may be called from any thread; the connections live on the proxy's own event loop.
    """

    def __init__(self, upstream_host: str, upstream_port: int, *,
                 listen_host: str = "127.0.0.1", listen_port: int = 0,
                 seed: int | None = None) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.listen_host = listen_host
        self._listen_port = listen_port
        self._shape = PASS_THROUGH
        self._rng = random.Random(seed)
        self._stats = ProxyStats()
        self._links = {"to_client": _Link(), "to_server": _Link()}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    # -- outside view ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The port the proxy listens on (known once :meth:`start` returned)."""
        return self._listen_port

    @property
    def address(self) -> tuple[str, int]:
        return self.listen_host, self._listen_port

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def current_shape(self) -> Shape:
        return self._shape

    def start(self, timeout: float = 10.0) -> None:
        """Bind and start serving in a daemon thread; raises OSError if it cannot bind."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"latency-proxy-{id(self):x}",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise OSError("the latency proxy did not start in time")
        if self._startup_error is not None:
            self._thread.join(timeout)
            self._thread = None
            raise OSError(f"the latency proxy cannot listen on {self.listen_host}:"
                          f"{self._listen_port}: {self._startup_error}")

    def shape(self, shape: Shape) -> None:
        """Apply ``shape`` to every chunk read from now on (PASS_THROUGH: switch it off)."""
        self._shape = shape  # one reference assignment: atomic for the loop's thread

    def stats(self) -> ProxyStats:
        """A consistent copy of the counters (read on the proxy's loop)."""
        loop = self._loop
        if loop is None or not self.running:
            return self._copy_stats()

        async def copy() -> ProxyStats:
            return self._copy_stats()

        return asyncio.run_coroutine_threadsafe(copy(), loop).result(timeout=10)

    def close(self, timeout: float = 10.0) -> None:
        """Stop listening, cut every connection, end the thread (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop already stopped
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout)
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._thread = None

    def __enter__(self) -> LatencyProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the loop's thread ----------------------------------------------------------------------
    def _copy_stats(self) -> ProxyStats:
        return dataclasses.replace(self._stats)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            try:
                self._server = loop.run_until_complete(asyncio.start_server(
                    self._handle, self.listen_host, self._listen_port, reuse_address=True))
            except OSError as exc:
                self._startup_error = exc
                return
            self._listen_port = int(self._server.sockets[0].getsockname()[1])
            self._ready.set()
            loop.run_forever()
        finally:
            self._ready.set()
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)

    async def _handle(self, client_reader: asyncio.StreamReader,
                      client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._stats.connections += 1
        self._stats.open_connections += 1
        self._writers.add(client_writer)
        _no_delay(client_writer)
        server_writer: asyncio.StreamWriter | None = None
        try:
            try:
                server_reader, upstream = await asyncio.wait_for(
                    asyncio.open_connection(self.upstream_host, self.upstream_port), 30)
            except (OSError, TimeoutError):
                self._stats.upstream_failures += 1
                return
            server_writer = upstream
            self._writers.add(upstream)
            _no_delay(upstream)
            pumps = [
                asyncio.ensure_future(self._pump(client_reader, upstream, "to_server")),
                asyncio.ensure_future(self._pump(server_reader, client_writer, "to_client")),
            ]
            try:
                # Either side closing ends the connection (PostgreSQL's protocol has no
                # half-closed use; a client's Terminate is followed by its close).
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            for writer in (client_writer, server_writer):
                if writer is not None:
                    self._writers.discard(writer)
                    writer.transport.abort()
            self._stats.open_connections -= 1
            if task is not None:
                self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    direction: str) -> None:
        """Copy ``reader`` to ``writer``, holding chunks as the current shape says."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, float, bytes] | None] = asyncio.Queue(QUEUE_CHUNKS)
        link = self._links[direction]
        pending = 0  # chunks queued or being held by the sender
        last_release = 0.0

        async def send() -> None:
            nonlocal pending
            while True:
                item = await queue.get()
                if item is None:
                    return
                read_at, release, data = item
                wait = release - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                if release > read_at:
                    self._stats.held(loop.time() - read_at)
                pending -= 1
                await writer.drain()

        sender = asyncio.ensure_future(send())
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                if direction == "to_client":
                    self._stats.bytes_to_client += len(data)
                else:
                    self._stats.bytes_to_server += len(data)
                shape = self._shape
                if shape.passes_through and pending == 0:
                    writer.write(data)
                    await writer.drain()
                    continue
                now = loop.time()
                release = link.transmit(now, len(data), shape.bandwidth)
                if direction == "to_client":
                    release += shape.hold(self._rng)
                release = max(release, last_release)  # never overtake an earlier chunk
                last_release = release
                pending += 1
                await queue.put((now, release, data))
                if sender.done():  # the peer went away while we held its data
                    break
            await queue.put(None)
            await sender
        finally:
            if not sender.done():
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                    await sender


def _no_delay(writer: asyncio.StreamWriter) -> None:
    """Forward small packets at once (no Nagle), as the database's own sockets do."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
