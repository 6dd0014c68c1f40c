"""network-latency: the asyncio TCP proxy, its fault, the per-phase latency in the journal, runs.

The proxy's tests talk to a real echo server over real sockets; the engine tests run the real
lifecycle against the embedded PostgreSQL. Delays are asserted as lower bounds only (a reply
cannot come back before it was held), never as upper bounds on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict

from pggit_chaos.engine.journal import Phase, PhaseRecord, phase_latencies
from pggit_chaos.engine.lifecycle import Run
from pggit_chaos.errors import InvalidExperiment
from pggit_chaos.faults.base import WorkloadWindow
from pggit_chaos.faults.latency import NetworkLatency, open_route, through, upstream_of
from pggit_chaos.faults.proxy import PASS_THROUGH, LatencyProxy, Shape
from pggit_chaos.local.state import StateFile
from pggit_chaos.local.substrate import LocalSubstrate
from pggit_chaos.spec import Experiment, load_experiments

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "experiments" / "10-network-latency.yaml"


# ------------------------------------------------------------------------- a real echo server


class EchoServer:
    """A threaded TCP echo server on the loopback: every byte it reads goes straight back."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while data := conn.recv(65536):
                conn.sendall(data)

    def close(self) -> None:
        self.sock.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def proxy(echo: EchoServer) -> Iterator[LatencyProxy]:
    with LatencyProxy("127.0.0.1", echo.port, seed=1) as running:
        yield running


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"connection closed after {len(data)} of {size} bytes"
        data += chunk
    return data


def round_trip(sock: socket.socket, payload: bytes) -> float:
    """Seconds from sending ``payload`` to having all of it back."""
    started = time.monotonic()
    sock.sendall(payload)
    assert receive(sock, len(payload)) == payload
    return time.monotonic() - started


# ------------------------------------------------------------------------------- the proxy

shapes = st.one_of(
    st.just(PASS_THROUGH),
    st.builds(Shape, delay=st.floats(0, 0.004), jitter=st.floats(0, 0.004)),
    st.builds(Shape, delay=st.floats(0, 0.002),
              bandwidth=st.integers(2**20, 2**24)),
)


@pytest.mark.unit
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(chunks=st.lists(st.binary(min_size=1, max_size=3000), min_size=1, max_size=25),
       shape=shapes)
def test_bytes_pass_unchanged_and_in_order_under_any_chunking(
    proxy: LatencyProxy, chunks: list[bytes], shape: Shape
) -> None:
    proxy.shape(shape)
    try:
        with connect(proxy.port) as sock:
            for chunk in chunks:  # each written on its own: the proxy reads them as it may
                sock.sendall(chunk)
            expected = b"".join(chunks)
            assert receive(sock, len(expected)) == expected
    finally:
        proxy.shape(PASS_THROUGH)


@pytest.mark.unit
def test_every_reply_is_held_at_least_the_delay(echo: EchoServer) -> None:
    delay = 0.05
    with LatencyProxy("127.0.0.1", echo.port) as proxy, connect(proxy.port) as sock:
        round_trip(sock, b"warm")
        assert proxy.stats().delayed_chunks == 0  # a pass-through holds nothing
        proxy.shape(Shape(delay=delay))
        times = [round_trip(sock, bytes([n]) * 100) for n in range(10)]
        stats = proxy.stats()
    assert min(times) >= delay
    assert stats.delayed_chunks >= 10
    assert stats.held_min is not None and stats.held_min >= delay - 0.001


@pytest.mark.unit
def test_jitter_varies_the_hold_but_never_below_delay_minus_jitter(echo: EchoServer) -> None:
    with LatencyProxy("127.0.0.1", echo.port, seed=7) as proxy, connect(proxy.port) as sock:
        proxy.shape(Shape(delay=0.02, jitter=0.015))
        times = [round_trip(sock, b"x" * 10) for _ in range(30)]
        stats = proxy.stats()
    assert min(times) >= 0.005
    assert stats.held_min is not None and stats.held_max is not None
    assert stats.held_min >= 0.005 - 0.001
    assert stats.held_max > stats.held_min  # it did vary


@pytest.mark.unit
def test_bandwidth_caps_what_a_direction_carries(echo: EchoServer) -> None:
    rate = 64 * 1024
    payload = bytes(range(256)) * 128  # 32 KiB: at least half a second through a 64 KiB/s link
    with LatencyProxy("127.0.0.1", echo.port) as proxy, connect(proxy.port) as sock:
        proxy.shape(Shape(bandwidth=rate))
        seconds = round_trip(sock, payload)
        stats = proxy.stats()
    assert seconds >= len(payload) / rate
    assert stats.bytes_to_server == stats.bytes_to_client == len(payload)


@pytest.mark.unit
def test_close_cuts_connections_and_frees_the_port(echo: EchoServer) -> None:
    proxy = LatencyProxy("127.0.0.1", echo.port)
    proxy.start()
    port = proxy.port
    sock = connect(port)
    round_trip(sock, b"hello")
    proxy.close()
    assert not proxy.running
    assert sock.recv(10) == b""  # cut: end of stream, not a hang
    sock.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)
    proxy.close()  # idempotent


@pytest.mark.unit
def test_an_unreachable_server_closes_the_client_connection() -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    port = int(closed.getsockname()[1])
    closed.close()
    with LatencyProxy("127.0.0.1", port) as proxy, connect(proxy.port) as sock:
        assert sock.recv(10) == b""
        assert proxy.stats().upstream_failures == 1


class GreetingServer(EchoServer):
    """An echo server that speaks first: it sends ``GREETING`` as soon as it accepts."""

    GREETING = b"server speaks first\n"

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            conn.sendall(GreetingServer.GREETING)
        EchoServer._echo(conn)


@pytest.mark.unit
def test_bytes_either_side_sends_before_the_link_reach_the_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Debian 12's Python 3.11.2 starts reading a transport right after connection_made() even
    when it was paused there, so a client that sends at once is read before the upstream is
    connected; a server may speak before create_connection() returned. The upstream link is
    held back here until both sides' first bytes were read (a slow upstream connect), so the
    before-the-link path runs on every Python, whether pause_reading() holds or not."""
    from pggit_chaos.faults import proxy as proxy_module

    read_early = {"client": threading.Event(), "server": threading.Event()}
    waited: list[float] = []
    original_link = proxy_module._Connection.link
    client_read = proxy_module._ClientSide.data_received
    server_read = proxy_module._ServerSide.data_received

    def client_data(self: Any, data: bytes) -> None:
        read_early["client"].set()
        client_read(self, data)

    def server_data(self: Any, data: bytes) -> None:
        read_early["server"].set()
        server_read(self, data)

    def slow_link(self: Any, server: Any, side: Any, started: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time() if started is None else started
        both = all(event.is_set() for event in read_early.values())
        if both or loop.time() - started > 5:
            waited.append(loop.time() - started)
            original_link(self, server, side)
            return
        loop.call_later(0.01, slow_link, self, server, side, started)

    monkeypatch.setattr(proxy_module._ClientSide, "data_received", client_data)
    monkeypatch.setattr(proxy_module._ServerSide, "data_received", server_data)
    monkeypatch.setattr(proxy_module._Connection, "link", slow_link)
    upstream = GreetingServer()
    try:
        with LatencyProxy("127.0.0.1", upstream.port) as proxy, connect(proxy.port) as sock:
            sock.sendall(b"client speaks at once")  # before the proxy reached the server
            expected = GreetingServer.GREETING + b"client speaks at once"
            assert receive(sock, len(expected)) == expected
            round_trip(sock, b"and then as usual")  # asserts the echo came back whole
            stats = proxy.stats()
    finally:
        upstream.close()
    assert all(event.is_set() for event in read_early.values())
    assert waited and waited[0] < 5, "the link was not held back by early bytes"
    assert stats.bytes_to_server == len(b"client speaks at once") + len(b"and then as usual")


# --------------------------------------------------------------------------------- the fault


@pytest.mark.unit
def test_dsn_through_the_proxy_keeps_everything_but_where_it_connects() -> None:
    dsn = "host=db.example port=6432 user=app dbname=pggit sslmode=require"
    assert upstream_of(dsn) == ("db.example", 6432)
    params = conninfo_to_dict(through(dsn, "127.0.0.1", 40000))
    assert params == {"host": "db.example", "hostaddr": "127.0.0.1", "port": "40000",
                      "user": "app", "dbname": "pggit", "sslmode": "require"}
    assert upstream_of("postgresql://u@10.0.0.5/db") == ("10.0.0.5", 5432)
    assert upstream_of("host=x hostaddr=10.1.2.3 port=5433") == ("10.1.2.3", 5433)
    for bad in ("host=a,b port=5432", "host=/var/run/postgresql", "dbname=x"):
        with pytest.raises(InvalidExperiment):
            upstream_of(bad)


@pytest.mark.unit
def test_fault_injects_and_reverts_the_delay_and_reads_its_evidence(echo: EchoServer) -> None:
    route = open_route(f"host=127.0.0.1 port={echo.port} dbname=x")
    try:
        assert conninfo_to_dict(route.workload_dsn)["port"] == str(route.proxy.port)
        fault = NetworkLatency(route, Shape(delay=0.03, jitter=0.01))
        fault.check()
        assert fault.intent().undo["kind"] == "thread"  # dies with the runner: nothing to undo
        with connect(route.proxy.port) as sock:
            round_trip(sock, b"before")
            fault.inject()
            assert route.proxy.current_shape == Shape(delay=0.03, jitter=0.01)
            held = [round_trip(sock, b"during") for _ in range(5)]
            fault.revert()
            assert route.proxy.current_shape is PASS_THROUGH
            delayed = route.proxy.stats().delayed_chunks
            round_trip(sock, b"after")
            assert route.proxy.stats().delayed_chunks == delayed  # nothing held after revert
        fault.revert()  # idempotent
        evidence = fault.evidence(WorkloadWindow(seconds=1.0, ok=5))
    finally:
        route.close()
    assert min(held) >= 0.02
    assert evidence.bit, evidence.summary
    assert evidence.figures["delayed_chunks"] == 5
    assert float(evidence.figures["held_min_ms"]) >= 19.0


@pytest.mark.unit
def test_a_fault_that_carried_nothing_did_not_bite(echo: EchoServer) -> None:
    route = open_route(f"host=127.0.0.1 port={echo.port}")
    try:
        fault = NetworkLatency(route, Shape(delay=0.05))
        assert not fault.evidence(WorkloadWindow(seconds=1.0)).bit  # never injected
        fault.inject()
        fault.revert()
        evidence = fault.evidence(WorkloadWindow(seconds=1.0))
    finally:
        route.close()
    assert not evidence.bit and "held nothing" in evidence.summary


# --------------------------------------------------------------- per-phase latency (journal)


@pytest.mark.unit
def test_phase_latencies_group_samples_by_the_phase_they_were_invoked_in() -> None:
    now = datetime.now(UTC)
    records = [
        PhaseRecord(phase=Phase.SteadyState, started_at=now, start_offset=0.0, end_offset=1.0),
        PhaseRecord(phase=Phase.Injecting, started_at=now, start_offset=1.0, end_offset=3.0),
        PhaseRecord(phase=Phase.Verifying, started_at=now, start_offset=3.0),  # still open
        PhaseRecord(phase=Phase.Passed, started_at=now, start_offset=9.0, end_offset=9.0),
    ]
    samples = [(0.5, 2.0), (0.99, 4.0), (1.0, 60.0), (2.9, 80.0), (3.0, 5.0), (50.0, 7.0)]
    by_phase = phase_latencies(records, samples)
    assert [(p.phase, p.ok) for p in by_phase] == [
        (Phase.SteadyState, 2), (Phase.Injecting, 2), (Phase.Verifying, 2)]
    injecting = by_phase[1]
    assert injecting.latency_p50_ms == 70.0 and injecting.latency_p99_ms is not None
    assert 60.0 <= injecting.latency_p99_ms <= 80.0
    empty = phase_latencies(records[:1], [])
    assert empty[0].ok == 0 and empty[0].latency_p99_ms is None


# -------------------------------------------------------------- the engine, the runs (real)


def latency_experiment(**spec: Any) -> Experiment:
    [example] = load_experiments(EXAMPLE)
    manifest = example.to_manifest()
    manifest["spec"].update(spec)
    manifest["spec"]["verification"] = {"checks": [], "invariants": True}
    return Experiment.model_validate(manifest)


@pytest.mark.postgres
def test_cancelled_run_reverts_the_delay_before_it_ends(tmp_path: Path) -> None:
    experiment = latency_experiment(duration="60s")
    substrate = LocalSubstrate(state=StateFile.in_dir(tmp_path / "state"))
    run = Run(experiment, substrate, None, baseline=0.5)
    seen: dict[str, Any] = {}

    async def cancel_mid_fault() -> None:
        task = asyncio.ensure_future(run.execute())
        while run.journal.injected_at is None:
            assert not task.done(), run.journal.reason
            await asyncio.sleep(0.05)
        route = substrate.latency_route
        assert route is not None
        seen["shape during"] = route.proxy.current_shape
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        seen["shape after"] = route.proxy.current_shape
        seen["proxy"] = route.proxy

    try:
        asyncio.run(cancel_mid_fault())
    finally:
        substrate.close()
    assert seen["shape during"] == Shape(delay=0.05, jitter=0.01)
    assert seen["shape after"] is PASS_THROUGH
    assert run.journal.reverted_at is not None and run.journal.error == "interrupted"
    assert substrate.state.pending() == []
    assert not seen["proxy"].running  # close() ended the proxy's thread


@pytest.mark.postgres
def test_a_delay_beyond_the_operation_timeout_ends_operations_indeterminate(
    tmp_path: Path,
) -> None:
    experiment = latency_experiment(
        duration="3s", workload={"clients": 2, "rate": 20, "operationTimeout": "100ms"},
        fault={"type": "network-latency", "networkLatency": {"delay": "300ms"}})
    substrate = LocalSubstrate(state=StateFile.in_dir(tmp_path / "state"))
    run = Run(experiment, substrate, None, baseline=1.0)
    try:
        journal = asyncio.run(run.execute())
    finally:
        substrate.close()
    assert journal.verdict == "Pass", journal.reason
    assert journal.workload.indeterminate > 0  # timed out behind the delay
    assert journal.workload.lost == 0
    # No operation invoked while the delay was on (from inject() returned to 100 ms before the
    # revert: a reply the server sent later was not held) finished within its 100 ms.
    window = journal.fault_window
    assert window is not None and window.end_offset is not None
    held = [pair for pair in run.history.pairs()
            if window.start_offset <= pair.invoke.time <= window.end_offset - 0.1]
    assert held, "nothing was invoked while the delay was on"
    assert [pair.completion.type for pair in held if pair.completion is not None] == \
        ["info"] * len(held)


def run_cli(tmp_path: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pggit_chaos.cli", "run", "--quiet", "--report-dir",
         str(tmp_path / "reports"), *args],
        env={**_env(tmp_path)}, capture_output=True, text=True, timeout=timeout)


def _env(tmp_path: Path) -> dict[str, str]:
    import os

    return {**os.environ, "PGGIT_CHAOS_STATE_DIR": str(tmp_path / "state")}


@pytest.mark.postgres
def test_experiment_10_passes_and_the_journal_shows_the_delay(tmp_path: Path) -> None:
    result = run_cli(tmp_path, str(EXAMPLE))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [path] = (tmp_path / "reports").glob("*/journal.json")
    journal = json.loads(path.read_text())
    assert journal["verdict"] == "Pass", journal["reason"]
    assert journal["workload"]["lost"] == 0 and journal["workload"]["ok"] > 0
    assert journal["fault_evidence"]["bit"], journal["fault_evidence"]["summary"]
    phases = {p["phase"]: p for p in journal["workload"]["phases"]}
    # delay 50ms ± 10ms on every reply: each acknowledged operation of the fault took longer.
    assert phases["Injecting"]["ok"] > 0
    assert phases["Injecting"]["latency_p99_ms"] >= 50.0
    assert phases["Injecting"]["latency_p50_ms"] >= 40.0
    assert StateFile.in_dir(tmp_path / "state").pending() == []
    summary = (path.parent / "summary.md").read_text()
    assert "By phase (invoked in it):" in summary and "Injecting p50/p99" in summary


@pytest.mark.postgres
def test_sigterm_mid_fault_reverts_and_writes_the_journal(tmp_path: Path) -> None:
    experiment = tmp_path / "latency.yaml"
    experiment.write_text(EXAMPLE.read_text().replace("duration: 5s", "duration: 60s"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pggit_chaos.cli", "run", "--quiet", "--report-dir",
         str(tmp_path / "reports"), str(experiment)],
        env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = StateFile.in_dir(tmp_path / "state")
    deadline = time.monotonic() + 120
    while not any(i.type == "network-latency" for i in state.pending()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the fault was never injected"
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    [path] = (tmp_path / "reports").glob("*/journal.json")
    journal = json.loads(path.read_text())
    assert journal["reverted_at"] is not None and journal["error"] == "interrupted"
    assert state.pending() == []
