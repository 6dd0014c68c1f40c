"""A small asyncio TCP proxy that can delay and rate-limit the traffic it carries.

The substrates (local and Kubernetes alike) put a :class:`LatencyProxy` between the workload's
clients and the database server for ``network-latency`` (``tc netem`` is not available on the
machines this runs on, and needs privileges a runner pod does not have). It runs its own event
loop in a daemon thread of the runner's process, so it is the same code in a local run and
inside the runner pod, and nothing outlives the process. It starts as a pass-through (no added
delay); :meth:`LatencyProxy.shape` switches a :class:`Shape` on (the fault's inject) and
``shape(PASS_THROUGH)`` off again (its revert). Each connection is a pair of asyncio protocols,
no task per chunk: while nothing is held, what one socket receives is written to the other at
once (the overhead ``benchmarks/bench_latency_proxy.py`` measures); reading stops while the
other side's buffer is full or too much is held (backpressure). Whatever either socket sends
before the other side is connected is kept and goes out, in order, once it is: the proxy does not
rely on ``pause_reading()`` in ``connection_made()`` to hold it back (on CPython 3.11.2, Debian
12's own Python, the transport starts reading right after ``connection_made()`` even when paused).

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
import collections
import contextlib
import dataclasses
import random
import threading
from dataclasses import dataclass

__all__ = ["PASS_THROUGH", "LatencyProxy", "ProxyStats", "Shape"]

#: Bytes held per direction of one connection before the proxy stops reading (backpressure).
HELD_BYTES = 4 * 2**20


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
        self._connections: set[_Connection] = set()
        self._connecting: set[asyncio.Task[None]] = set()
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
                self._server = loop.run_until_complete(loop.create_server(
                    self._accept, self.listen_host, self._listen_port, reuse_address=True))
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
        for task in list(self._connecting):
            task.cancel()
        for connection in list(self._connections):
            connection.abort()
        if self._connecting:
            await asyncio.wait(list(self._connecting), timeout=5)

    def _accept(self) -> _ClientSide:
        return _ClientSide(self)


class _Connection:
    """One proxied connection: the client's socket, the server's, a direction each way."""

    def __init__(self, proxy: LatencyProxy, client: asyncio.Transport) -> None:
        self.proxy = proxy
        self.client = client
        self.server: asyncio.Transport | None = None
        self.to_server: _Direction | None = None
        self.to_client: _Direction | None = None
        self.closed = False
        #: What each side sent before the other was connected, in order (flushed by link).
        self.early: dict[str, list[bytes]] = {"to_server": [], "to_client": []}
        self.early_bytes = 0
        self.early_paused: list[asyncio.Transport] = []

    def keep(self, name: str, data: bytes, src: asyncio.Transport) -> None:
        """Hold ``data`` read before the link; stop reading ``src`` if too much is kept."""
        self.early[name].append(data)
        self.early_bytes += len(data)
        if self.early_bytes > HELD_BYTES and src not in self.early_paused:
            src.pause_reading()
            self.early_paused.append(src)

    def link(self, server: asyncio.Transport, server_side: _ServerSide) -> None:
        self.server = server
        self.to_server = _Direction(self.proxy, "to_server", self.client, server)
        self.to_client = _Direction(self.proxy, "to_client", server, self.client)
        server_side.direction = self.to_client
        server_side.reverse = self.to_server
        early, self.early, self.early_bytes = self.early, {"to_server": [], "to_client": []}, 0
        for src in self.early_paused:  # from here on the directions' own backpressure rules
            if not src.is_closing():
                src.resume_reading()
        self.early_paused = []
        for data in early["to_server"]:
            self.to_server.feed(data)
        for data in early["to_client"]:
            self.to_client.feed(data)

    def lost(self, which: str) -> None:
        """One side's socket is gone: deliver what is held for the other, then close it."""
        src_dir = self.to_server if which == "client" else self.to_client
        dst_dir = self.to_client if which == "client" else self.to_server
        if src_dir is not None:
            src_dir.finish()  # what the lost side sent still goes out, then the other closes
        if dst_dir is not None:
            dst_dir.drop()  # nothing can reach the lost side any more
        if src_dir is None:  # not linked yet
            other = self.server if which == "client" else self.client
            if other is not None:
                other.close()
        self._forget()

    def abort(self) -> None:
        for direction in (self.to_server, self.to_client):
            if direction is not None:
                direction.drop()
        for transport in (self.client, self.server):
            if transport is not None:
                transport.abort()
        self._forget()

    def _forget(self) -> None:
        if not self.closed:
            self.closed = True
            self.proxy._stats.open_connections -= 1
            self.proxy._connections.discard(self)


class _Direction:
    """Bytes from ``src`` to ``dst``: forwarded at once, or held in order as the shape says."""

    def __init__(self, proxy: LatencyProxy, name: str, src: asyncio.Transport,
                 dst: asyncio.Transport) -> None:
        self.proxy = proxy
        self.name = name
        self.src = src
        self.dst = dst
        self.loop = asyncio.get_running_loop()
        self.held: collections.deque[tuple[float, float, bytes]] = collections.deque()
        self.held_bytes = 0
        self.last_release = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.dst_full = False  # the destination's write buffer is over its high-water mark
        self.paused = False
        self.finishing = False

    def feed(self, data: bytes) -> None:
        stats = self.proxy._stats
        if self.name == "to_client":
            stats.bytes_to_client += len(data)
        else:
            stats.bytes_to_server += len(data)
        shape = self.proxy._shape
        if shape.passes_through and not self.held:
            self.dst.write(data)
            return
        now = self.loop.time()
        link = self.proxy._links[self.name]
        release = link.transmit(now, len(data), shape.bandwidth)
        if self.name == "to_client":
            release += shape.hold(self.proxy._rng)
        release = max(release, self.last_release)  # never overtake an earlier chunk
        self.last_release = release
        self.held.append((now, release, data))
        self.held_bytes += len(data)
        self._flow()
        if self.timer is None:
            self._flush()

    def _flush(self) -> None:
        self.timer = None
        now = self.loop.time()
        stats = self.proxy._stats
        while self.held and self.held[0][1] <= now:
            read_at, release, data = self.held.popleft()
            self.held_bytes -= len(data)
            self.dst.write(data)
            if release > read_at:
                stats.held(now - read_at)
        if self.held:
            self.timer = self.loop.call_at(self.held[0][1], self._flush)
        elif self.finishing:
            self.dst.close()
        self._flow()

    def writable(self, full: bool) -> None:
        """The destination's buffer went over (or back under) its high-water mark."""
        self.dst_full = full
        self._flow()

    def _flow(self) -> None:
        """Stop reading the source while the destination is full or too much is held."""
        pause = self.dst_full or self.held_bytes > HELD_BYTES
        if pause != self.paused and not self.src.is_closing():
            self.paused = pause
            if pause:
                self.src.pause_reading()
            else:
                self.src.resume_reading()

    def finish(self) -> None:
        """The source is gone: deliver what is held, then close the destination."""
        self.finishing = True
        if not self.held:
            self.dst.close()

    def drop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.held.clear()
        self.held_bytes = 0


class _ClientSide(asyncio.Protocol):
    """The client's socket: connects to the server, then feeds the to-server direction."""

    def __init__(self, proxy: LatencyProxy) -> None:
        self.proxy = proxy
        self.connection: _Connection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.connection = _Connection(self.proxy, transport)
        self.proxy._stats.connections += 1
        self.proxy._stats.open_connections += 1
        self.proxy._connections.add(self.connection)
        task = asyncio.get_running_loop().create_task(self._connect(self.connection))
        self.proxy._connecting.add(task)
        task.add_done_callback(self.proxy._connecting.discard)

    async def _connect(self, connection: _Connection) -> None:
        loop = asyncio.get_running_loop()
        try:
            server, side = await asyncio.wait_for(loop.create_connection(
                lambda: _ServerSide(connection), self.proxy.upstream_host,
                self.proxy.upstream_port), 30)
        except (OSError, TimeoutError, asyncio.CancelledError):
            self.proxy._stats.upstream_failures += 1
            connection.client.close()
            return
        if connection.closed:  # the client left meanwhile
            server.close()
            return
        connection.link(server, side)

    def data_received(self, data: bytes) -> None:
        connection = self.connection
        if connection is None:
            return
        if connection.to_server is not None:
            connection.to_server.feed(data)
        else:  # the server's side is not connected yet: keep it for the link
            connection.keep("to_server", data, connection.client)

    def pause_writing(self) -> None:
        if self.connection is not None and self.connection.to_client is not None:
            self.connection.to_client.writable(full=True)

    def resume_writing(self) -> None:
        if self.connection is not None and self.connection.to_client is not None:
            self.connection.to_client.writable(full=False)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.connection is not None:
            self.connection.lost("client")


class _ServerSide(asyncio.Protocol):
    """The server's socket: feeds the to-client direction."""

    def __init__(self, connection: _Connection) -> None:
        self.connection = connection
        self.transport: asyncio.Transport | None = None
        self.direction: _Direction | None = None
        self.reverse: _Direction | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.direction is not None:
            self.direction.feed(data)
        elif self.transport is not None:  # the server spoke before the link
            self.connection.keep("to_client", data, self.transport)

    def pause_writing(self) -> None:
        if self.reverse is not None:
            self.reverse.writable(full=True)

    def resume_writing(self) -> None:
        if self.reverse is not None:
            self.reverse.writable(full=False)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.connection.server is not None:
            self.connection.lost("server")
