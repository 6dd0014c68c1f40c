"""Resource faults on the embedded server's processes through cgroups (v1 and v2).

``cpu-throttle`` (CPU quota) and ``pod-pause`` (freezer) create a cgroup
``pggit-chaos-<intent id>``, move the postmaster and all its current children in (new backends
inherit it), apply their setting, and on revert thaw, move every process back to the cgroup it
came from and remove the cgroup. ``memory-pressure`` is different: memory already allocated is
not charged to a cgroup a process moves into (cgroup v2 never moves charges, and v1 kernels
since 6.x refuse ``memory.move_charge_at_immigrate``), so a limit on a new cgroup would only
bite what the server allocates afterwards. Like a container's, the server's memory cgroup
(:class:`ServerCgroup`) therefore exists from the server's start, and the fault lowers its limit.

Each fault reads its evidence from the kernel: ``cpu.stat`` (throttled periods and time),
``memory.failcnt`` / ``memory.events`` and the peak usage, ``freezer.state`` /
``cgroup.events``. Built by the local substrate; :func:`revert_cgroup` and
:func:`revert_limit` undo a recorded intent without the Python objects (``cleanup``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pggit_chaos.errors import FaultError, InsufficientPrivileges
from pggit_chaos.faults.base import FaultEvidence, FaultIntent, Figure, WorkloadWindow
from pggit_chaos.local.server import child_pids

CGROUP_ROOT = Path("/sys/fs/cgroup")
#: Every cgroup this tool creates starts with this name; cleanup refuses any other.
CGROUP_PREFIX = "pggit-chaos-"


def cgroup_version(root: Path = CGROUP_ROOT) -> int:
    """2 on a unified hierarchy (``cgroup.controllers`` at the root), else 1."""
    return 2 if (root / "cgroup.controllers").exists() else 1


def _v1_mount(controller: str) -> Path:
    """The mount point of a cgroup v1 controller (``/sys/fs/cgroup/cpu`` here)."""
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            parts = line.split()
            if len(parts) >= 4 and parts[2] == "cgroup" and controller in parts[3].split(","):
                return Path(parts[1])
    candidate = CGROUP_ROOT / controller
    if candidate.is_dir():
        return candidate
    raise FaultError(f"the cgroup v1 controller {controller!r} is not mounted")


def hierarchy_root(controller: str, version: int) -> Path:
    """Folder of the hierarchy that holds ``controller``."""
    return CGROUP_ROOT if version == 2 else _v1_mount(controller)


def process_cgroup(pid: int, controller: str, version: int) -> Path:
    """Absolute folder of the cgroup ``pid`` is in, for ``controller``'s hierarchy."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError as exc:
        raise FaultError(f"process {pid} is gone: {exc}") from exc
    for line in lines:
        hid, controllers, path = line.split(":", 2)
        if version == 2 and hid == "0":
            return CGROUP_ROOT / path.lstrip("/")
        if version == 1 and controller in controllers.split(","):
            return _v1_mount(controller) / path.lstrip("/")
    raise FaultError(f"process {pid} is in no {controller} cgroup")


def _write(path: Path, value: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(value)


def cgroup_pids(folder: Path) -> list[int]:
    """PIDs in a cgroup (empty when the cgroup does not exist)."""
    try:
        text = (folder / "cgroup.procs").read_text()
    except OSError:
        return []
    return [int(line) for line in text.split()]


def _move(pid: int, folder: Path) -> bool:
    """Move one process into ``folder``; False when it has exited meanwhile."""
    try:
        _write(folder / "cgroup.procs", str(pid))
        return True
    except ProcessLookupError:
        return False
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            return False
        if not Path(f"/proc/{pid}").exists():
            return False
        raise


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _wait_file(path: Path, predicate: Callable[[str], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            if predicate(path.read_text()):
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)


def _is_frozen_v1(text: str) -> bool:
    return text.strip() == "FROZEN"


def _is_thawed_v1(text: str) -> bool:
    return text.strip() == "THAWED"


def _v2_frozen(text: str) -> bool:
    return "frozen 1" in text.splitlines()


def _v2_thawed(text: str) -> bool:
    return "frozen 0" in text.splitlines()


def thaw(folder: Path, version: int, timeout: float = 10.0) -> None:
    """Thaw a (possibly) frozen cgroup and wait until it is thawed."""
    if version == 2:
        if not (folder / "cgroup.freeze").exists():
            return
        _write(folder / "cgroup.freeze", "0")
        if not _wait_file(folder / "cgroup.events", _v2_thawed, timeout):
            raise FaultError(f"{folder} did not thaw within {timeout:.0f}s")
        return
    state = folder / "freezer.state"
    if not state.exists():
        return
    _write(state, "THAWED")
    if not _wait_file(state, _is_thawed_v1, timeout):
        raise FaultError(f"{folder} did not thaw within {timeout:.0f}s")


def revert_cgroup(undo: dict[str, Any]) -> str:
    """Thaw, move every process back to where it came from, remove the cgroup; idempotent."""
    folder = Path(str(undo["path"]))
    version = int(undo["version"])
    if not folder.name.startswith(CGROUP_PREFIX):
        raise FaultError(f"refusing to touch {folder}: not a cgroup pggit-chaos created")
    if not folder.exists():
        return f"cgroup {folder} already gone"
    thaw(folder, version)
    origins: dict[str, str] = {str(k): str(v) for k, v in dict(undo.get("origins", {})).items()}
    default = Path(str(undo["default_origin"]))
    moved = 0
    for _ in range(100):
        pids = cgroup_pids(folder)
        if not pids:
            break
        for pid in pids:
            origin = Path(origins.get(str(pid), str(default)))
            if not origin.exists():
                origin = default
            if _move(pid, origin):
                moved += 1
        time.sleep(0.01)
    for _ in range(200):
        try:
            folder.rmdir()
            break
        except FileNotFoundError:
            break
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise FaultError(f"cannot remove cgroup {folder}: {exc}") from exc
            for pid in cgroup_pids(folder):
                _move(pid, default)
            time.sleep(0.02)
    else:
        raise FaultError(f"cgroup {folder} still busy: {cgroup_pids(folder)}")
    return f"moved {moved} process(es) out of cgroup {folder} and removed it"


def check_cgroup_access(what: str, controller: str, version: int) -> None:
    """Raise InsufficientPrivileges unless we can create cgroups for ``controller``."""
    root = hierarchy_root(controller, version)
    if version == 2:
        controllers = (root / "cgroup.controllers").read_text().split()
        if controller != "freezer" and controller not in controllers:
            raise InsufficientPrivileges(
                f"{what} needs the cgroup v2 controller {controller!r}, which {root} does not offer"
            )
    if os.geteuid() != 0 or not os.access(root, os.W_OK):
        raise InsufficientPrivileges(f"{what} needs write access to {root} (run as root)")


def enable_v2_controller(parent: Path, controller: str) -> None:
    """Let ``parent``'s child cgroups use ``controller`` (cgroup v2 ``subtree_control``)."""
    if controller == "freezer":
        return
    control = parent / "cgroup.subtree_control"
    if controller in control.read_text().split():
        return
    try:
        _write(control, f"+{controller}")
    except OSError as exc:
        raise FaultError(f"cannot enable the {controller} controller in {parent}: {exc}") from exc


def read_flat_keyed(path: Path) -> dict[str, int]:
    """A cgroup file of ``key value`` lines (``cpu.stat``, ``memory.events``) as ints."""
    values: dict[str, int] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            values[parts[0]] = int(parts[1])
    return values


def _mib(size: float) -> str:
    return f"{size / 1024**2:.1f} MiB"


@dataclass
class _CgroupPlan:
    """Where a cgroup fault puts the server and where its processes came from."""

    version: int
    controller: str
    path: Path
    default_origin: Path
    origins: dict[int, Path]


class CgroupFault:
    """Common part of the cgroup faults: create, move in, apply, and revert."""

    type = "cgroup"
    recovery_from_injection = False
    #: The cgroup v1 controller this fault needs (its hierarchy holds the cgroup).
    controller = "cpu"

    def __init__(self, postmaster: Callable[[], int | None], *, intent_id: str | None = None
                 ) -> None:
        self._postmaster = postmaster
        self.version = cgroup_version()
        self._id = intent_id or uuid.uuid4().hex[:12]
        self._plan: _CgroupPlan | None = None
        self._intent: FaultIntent | None = None
        self._captured = False
        self._capture_error: str | None = None
        self.check()

    # -- what subclasses provide -------------------------------------------------------------
    def _settings(self) -> dict[str, str]:
        """File name -> value to write into the new cgroup before processes move in."""
        raise FaultError("a cgroup fault must say what it sets")  # pragma: no cover

    def _after_move(self, folder: Path) -> None:
        """Hook run once every process is inside (the freezer freezes here)."""

    def _capture(self, folder: Path) -> None:
        """Hook run by ``revert`` before the cgroup goes: read the counters the evidence needs."""

    def evidence(self, window: WorkloadWindow) -> FaultEvidence:
        return FaultEvidence(False, f"{self.type}: no evidence is read for this fault")

    def _describe(self) -> str:
        return self.type

    # -- privileges ----------------------------------------------------------------------------
    def check(self) -> None:
        """Raise InsufficientPrivileges unless we can create cgroups in the right hierarchy."""
        check_cgroup_access(self.type, self.controller, self.version)

    # -- the protocol ----------------------------------------------------------------------------
    def _pid(self) -> int:
        pid = self._postmaster()
        if pid is None or not _alive(pid):
            raise FaultError(f"{self.type}: the PostgreSQL server is not running")
        return pid

    def _make_plan(self) -> _CgroupPlan:
        if self._plan is not None:
            return self._plan
        postmaster = self._pid()
        default = process_cgroup(postmaster, self.controller, self.version)
        origins = {postmaster: default}
        for pid in child_pids(postmaster):
            with contextlib.suppress(FaultError):
                origins[pid] = process_cgroup(pid, self.controller, self.version)
        # v1: nest under the server's own cgroup, so limits above it still apply. v2: the
        # root is the only parent allowed to hold processes *and* delegate controllers.
        parent = default if self.version == 1 else CGROUP_ROOT
        path = parent / f"{CGROUP_PREFIX}{self._id}"
        self._plan = _CgroupPlan(self.version, self.controller, path, default, origins)
        return self._plan

    def intent(self) -> FaultIntent:
        if self._intent is None:
            plan = self._make_plan()
            self._intent = FaultIntent(
                type=self.type,
                target=f"postmaster pid {self._pid()} and its children",
                undo={
                    "kind": "cgroup",
                    "version": plan.version,
                    "controller": plan.controller,
                    "path": str(plan.path),
                    "default_origin": str(plan.default_origin),
                    "origins": {str(pid): str(path) for pid, path in plan.origins.items()},
                },
                description=f"{self._describe()} via cgroup {plan.path}",
                id=self._id,
            )
        return self._intent

    @property
    def path(self) -> Path:
        """The cgroup folder this fault creates."""
        return self._make_plan().path

    def plan_lines(self) -> list[str]:
        plan = self._make_plan()
        lines = [f"create cgroup v{plan.version} {plan.path}"]
        lines += [f"write {value!r} to {plan.path / name}"
                  for name, value in self._settings().items()]
        lines.append(
            f"move postmaster {self._pid()} and {len(plan.origins) - 1} child process(es) "
            f"from {plan.default_origin} into it"
        )
        return lines

    def inject(self) -> None:
        self.check()
        plan = self._make_plan()
        if self._intent is None:
            self.intent()
        if plan.version == 2:
            enable_v2_controller(plan.path.parent, self.controller)
        try:
            plan.path.mkdir()
        except FileExistsError:
            pass
        except OSError as exc:
            raise FaultError(f"cannot create cgroup {plan.path}: {exc}") from exc
        for name, value in self._settings().items():
            try:
                _write(plan.path / name, value)
            except OSError as exc:
                raise FaultError(f"{self.type}: cannot write {value!r} to {plan.path / name}: {exc}"
                                 ) from exc
        postmaster = self._pid()
        _move(postmaster, plan.path)
        # Children forked before the move stay where they were: move them until none is left.
        for _ in range(50):
            outside = [pid for pid in child_pids(postmaster) if pid not in cgroup_pids(plan.path)]
            if not outside:
                break
            for pid in outside:
                plan.origins.setdefault(pid, plan.default_origin)
                _move(pid, plan.path)
        self._after_move(plan.path)

    def revert(self) -> None:
        if self._plan is None:
            return
        if self._plan.path.exists() and not self._captured:
            self._captured = True
            try:
                self._capture(self._plan.path)
            except OSError as exc:  # the evidence says so; the revert must go on
                self._capture_error = str(exc)
        revert_cgroup(self.intent().undo | {
            "origins": {str(pid): str(path) for pid, path in self._plan.origins.items()}
        })


class CpuThrottle(CgroupFault):
    """CPU quota of ``cpu_percent`` % of one core for the server's processes."""

    type = "cpu-throttle"
    controller = "cpu"
    PERIOD_US = 100_000

    def __init__(self, postmaster: Callable[[], int | None], cpu_percent: int = 10,
                 *, intent_id: str | None = None) -> None:
        if not 1 <= cpu_percent <= 100:
            raise FaultError(f"cpu-throttle: cpuPercent must be 1..100, not {cpu_percent}")
        self.cpu_percent = cpu_percent
        #: ``cpu.stat`` as revert read it, just before the cgroup was removed.
        self.final_stat: dict[str, int] = {}
        super().__init__(postmaster, intent_id=intent_id)

    @property
    def quota_us(self) -> int:
        return max(1000, self.PERIOD_US * self.cpu_percent // 100)

    def _settings(self) -> dict[str, str]:
        if self.version == 2:
            return {"cpu.max": f"{self.quota_us} {self.PERIOD_US}"}
        return {"cpu.cfs_period_us": str(self.PERIOD_US), "cpu.cfs_quota_us": str(self.quota_us)}

    def _describe(self) -> str:
        return f"cpu-throttle to {self.cpu_percent}% of one core"

    def stat(self) -> dict[str, int]:
        """The cgroup's ``cpu.stat`` (nr_throttled, throttled_time/throttled_usec, ...)."""
        try:
            return read_flat_keyed(self.path / "cpu.stat")
        except OSError:
            return {}

    def _capture(self, folder: Path) -> None:
        self.final_stat = read_flat_keyed(folder / "cpu.stat")

    def evidence(self, window: WorkloadWindow) -> FaultEvidence:
        """``cpu.stat``: in how many CFS periods the kernel throttled the server, and how long."""
        if self._capture_error is not None or not self.final_stat:
            return FaultEvidence.unreadable(
                self.type, self._capture_error or "cpu.stat was not read before the revert")
        stat = self.final_stat
        periods = stat.get("nr_periods", 0)
        throttled = stat.get("nr_throttled", 0)
        # v1: throttled_time in ns; v2: throttled_usec.
        seconds = (stat.get("throttled_usec", 0) / 1e6 if self.version == 2
                   else stat.get("throttled_time", 0) / 1e9)
        figures: dict[str, Figure] = {
            "nr_periods": periods, "nr_throttled": throttled,
            "throttled_seconds": round(seconds, 3), "quota_percent_of_one_core": self.cpu_percent,
            "ok_per_s_before": round(window.baseline_ok_per_s, 1),
            "ok_per_s_during": round(window.ok_per_s, 1),
        }
        if "usage_usec" in stat:
            figures["cpu_seconds_used"] = round(stat["usage_usec"] / 1e6, 3)
        quota = f"a quota of {self.cpu_percent}% of one core"
        if throttled > 0:
            return FaultEvidence(True, (
                f"the kernel throttled the server in {throttled} of {periods} CFS periods "
                f"({seconds:.2f} s throttled) at {quota}; workload: {window.describe()}"), figures)
        return FaultEvidence(False, (
            f"cpu-throttle did not bite: the server never used up {quota} "
            f"(nr_throttled 0 of {periods} periods)"), figures)


class PodPause(CgroupFault):
    """Freeze the server's processes (cgroup freezer); revert thaws them first."""

    type = "pod-pause"
    controller = "freezer"

    def __init__(self, postmaster: Callable[[], int | None], *, intent_id: str | None = None
                 ) -> None:
        #: What revert read before thawing: the freezer's state and how many tasks it held.
        self.seen_frozen = False
        self.frozen_tasks = 0
        super().__init__(postmaster, intent_id=intent_id)

    def _settings(self) -> dict[str, str]:
        return {}

    def _describe(self) -> str:
        return "pod-pause (freezer)"

    def _after_move(self, folder: Path) -> None:
        if self.version == 2:
            _write(folder / "cgroup.freeze", "1")
            ok = _wait_file(folder / "cgroup.events", _v2_frozen, 10.0)
        else:
            _write(folder / "freezer.state", "FROZEN")
            ok = _wait_file(folder / "freezer.state", _is_frozen_v1, 10.0)
        if not ok:
            raise FaultError(f"pod-pause: {folder} did not freeze within 10s")

    def frozen(self) -> bool:
        """True while the cgroup is frozen."""
        folder = self.path
        try:
            if self.version == 2:
                return _v2_frozen((folder / "cgroup.events").read_text())
            return _is_frozen_v1((folder / "freezer.state").read_text())
        except OSError:
            return False

    def _capture(self, folder: Path) -> None:
        self.seen_frozen = self.frozen()
        self.frozen_tasks = len(cgroup_pids(folder))

    def evidence(self, window: WorkloadWindow) -> FaultEvidence:
        """The kernel reported the cgroup frozen, and the workload stalled meanwhile."""
        figures: dict[str, Figure] = {
            "frozen_processes": self.frozen_tasks if self.seen_frozen else 0,
            "longest_ack_gap_seconds": round(window.longest_ack_gap_seconds, 3),
            "window_seconds": round(window.seconds, 3),
            "ok_per_s_before": round(window.baseline_ok_per_s, 1),
            "ok_during": window.ok,
        }
        state = "cgroup.events frozen 1" if self.version == 2 else "freezer.state FROZEN"
        if not self.seen_frozen:
            return FaultEvidence(False, "pod-pause did not bite: the freezer did not report the "
                                 "server frozen before the thaw", figures)
        if not window.stalled():
            why = ("the workload acknowledged nothing before the freeze, so no stall can be "
                   "shown" if window.baseline_ok_per_s <= 0 else
                   f"the workload kept going ({window.describe()})")
            return FaultEvidence(False, f"pod-pause did not bite: {why}", figures)
        return FaultEvidence(True, (
            f"{self.frozen_tasks} server processes frozen ({state}); workload: "
            f"{window.describe()}"), figures)


class ServerCgroup:
    """The server's own cgroup for one controller, made before the server starts (its "pod").

    The embedded server is started inside it (``EmbeddedPostgres(cgroup=path)``), so all it ever
    allocates is charged to it, as to a container's cgroup. A resource of the run (recorded in
    the state file, removed by :meth:`remove` or ``cleanup``), not a fault.
    """

    def __init__(self, controller: str = "memory", *, intent_id: str | None = None) -> None:
        self.controller = controller
        self.version = cgroup_version()
        self.id = intent_id or uuid.uuid4().hex[:12]
        self.origin = process_cgroup(os.getpid(), controller, self.version)
        parent = self.origin if self.version == 1 else CGROUP_ROOT
        self.path = parent / f"{CGROUP_PREFIX}{self.id}"

    def check(self, what: str = "memory-pressure") -> None:
        check_cgroup_access(what, self.controller, self.version)

    def undo(self) -> dict[str, Any]:
        """Undo data for the state file: :func:`revert_cgroup` removes it."""
        return {"kind": "cgroup", "version": self.version, "controller": self.controller,
                "path": str(self.path), "default_origin": str(self.origin), "origins": {}}

    def create(self) -> None:
        self.check()
        if self.version == 2:
            enable_v2_controller(self.path.parent, self.controller)
        try:
            self.path.mkdir(exist_ok=True)
        except OSError as exc:
            raise FaultError(f"cannot create cgroup {self.path}: {exc}") from exc

    def read(self, name: str) -> str:
        return (self.path / name).read_text()

    def remove(self) -> str:
        """Move whatever still runs inside out, and remove the cgroup; idempotent."""
        return revert_cgroup(self.undo())


def revert_limit(undo: dict[str, Any]) -> str:
    """Put a limit back (``memory.max`` / ``memory.limit_in_bytes``); idempotent."""
    folder = Path(str(undo["path"]))
    if not folder.name.startswith(CGROUP_PREFIX):
        raise FaultError(f"refusing to touch {folder}: not a cgroup pggit-chaos created")
    if not folder.exists():
        return f"cgroup {folder} already gone, and its limit with it"
    name, value = str(undo["file"]), str(undo["restore"])
    _write(folder / name, value)
    return f"wrote {value} to {folder / name}"


class MemoryPressure:
    """Lower the memory limit of the server's own cgroup (:class:`ServerCgroup`).

    The limit is ``limit_bytes``, or, with ``headroom_bytes``, the server's usage at injection
    plus that headroom (never more than ``limit_bytes``): it then squeezes a server of any size.
    """

    type = "memory-pressure"
    recovery_from_injection = False
    #: How often the usage is sampled for its peak while the limit is held.
    SAMPLE_SECONDS = 0.05
    #: A peak at or above this share of the limit counts as having reached it.
    NEAR_LIMIT = 0.95

    def __init__(self, cgroup: ServerCgroup, limit_bytes: int = 128 * 1024**2,
                 headroom_bytes: int | None = None, *, intent_id: str | None = None) -> None:
        if limit_bytes < 4 * 1024**2:
            raise FaultError(f"memory-pressure: a limit of {limit_bytes} bytes is too small")
        if headroom_bytes is not None and headroom_bytes < 0:
            raise FaultError("memory-pressure: headroom must be >= 0")
        self.cgroup = cgroup
        self.version = cgroup.version
        self.limit_bytes = limit_bytes
        self.headroom_bytes = headroom_bytes
        self._id = intent_id or uuid.uuid4().hex[:12]
        self._intent: FaultIntent | None = None
        #: The limit written at injection (``limit_bytes`` or usage + headroom).
        self.applied_limit: int | None = None
        self.usage_at_injection: int | None = None
        self._before: dict[str, int] = {}
        self._after: dict[str, int] = {}
        self._peak = 0
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None
        self._captured = False
        self._capture_error: str | None = None
        self.check()

    @property
    def limit_file(self) -> str:
        return "memory.max" if self.version == 2 else "memory.limit_in_bytes"

    @property
    def path(self) -> Path:
        return self.cgroup.path

    def check(self) -> None:
        self.cgroup.check(self.type)
        if not self.cgroup.path.is_dir():
            raise FaultError(f"memory-pressure: the server does not run in a cgroup of its own "
                             f"({self.cgroup.path} is missing)")

    def _describe(self) -> str:
        limit = f"a {_mib(self.limit_bytes)} limit"
        if self.headroom_bytes is not None:
            limit = (f"a limit of the server's usage + {_mib(self.headroom_bytes)} "
                     f"(at most {_mib(self.limit_bytes)})")
        return f"memory-pressure with {limit}"

    def intent(self) -> FaultIntent:
        if self._intent is None:
            self._intent = FaultIntent(
                type=self.type,
                target=f"the server's memory cgroup {self.path}",
                undo={"kind": "cgroup-limit", "version": self.version, "path": str(self.path),
                      "file": self.limit_file, "restore": "max" if self.version == 2 else "-1"},
                description=self._describe(),
                id=self._id,
            )
        return self._intent

    def plan_lines(self) -> list[str]:
        value = (f"min({self.limit_bytes}, usage + {self.headroom_bytes})"
                 if self.headroom_bytes is not None else str(self.limit_bytes))
        return [f"write {value} to {self.path / self.limit_file}",
                f"on revert write {self.intent().undo['restore']} to it"]

    def usage(self) -> int:
        name = "memory.current" if self.version == 2 else "memory.usage_in_bytes"
        return int(self.cgroup.read(name))

    def _counters(self) -> dict[str, int]:
        """Times the limit was hit and OOM kills (cumulative, since the cgroup was made)."""
        if self.version == 2:
            events = read_flat_keyed(self.path / "memory.events")
            return {"limit_hits": events.get("max", 0), "oom": events.get("oom", 0),
                    "oom_kill": events.get("oom_kill", 0)}
        control = read_flat_keyed(self.path / "memory.oom_control")
        return {"limit_hits": int(self.cgroup.read("memory.failcnt")), "oom": 0,
                "oom_kill": control.get("oom_kill", 0)}

    def _sample(self) -> None:
        while not self._stop.wait(self.SAMPLE_SECONDS):
            with contextlib.suppress(OSError, ValueError):
                self._peak = max(self._peak, self.usage())

    def inject(self) -> None:
        self.check()
        self.intent()
        usage = self.usage()
        limit = self.limit_bytes
        if self.headroom_bytes is not None:
            limit = min(limit, usage + self.headroom_bytes)
        self._before = self._counters()
        if self.version == 1:  # the peak from now on, not since the server started
            with contextlib.suppress(OSError):
                _write(self.path / "memory.max_usage_in_bytes", "0")
        self.usage_at_injection = usage
        self._peak = usage
        try:
            _write(self.path / self.limit_file, str(limit))
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise FaultError(
                    f"memory-pressure: the kernel could not reclaim the server's memory down "
                    f"to {_mib(limit)} (it uses {_mib(usage)}): give a higher limit or headroom"
                ) from exc
            raise FaultError(f"memory-pressure: cannot write {limit} to "
                             f"{self.path / self.limit_file}: {exc}") from exc
        self.applied_limit = limit
        self._stop.clear()
        self._sampler = threading.Thread(target=self._sample, name="pggit-chaos-memory-peak",
                                         daemon=True)
        self._sampler.start()

    def _capture(self) -> None:
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join(5)
            self._sampler = None
        try:
            self._after = self._counters()
            usage = self.usage()
            peak = max(self._peak, usage)
            if self.version == 1:
                peak = max(peak, int(self.cgroup.read("memory.max_usage_in_bytes")))
            self._peak = peak
        except (OSError, ValueError) as exc:
            self._capture_error = str(exc)

    def revert(self) -> None:
        if self.applied_limit is not None and not self._captured:
            self._captured = True
            self._capture()
        if self._intent is not None:
            revert_limit(self._intent.undo)

    def evidence(self, window: WorkloadWindow) -> FaultEvidence:
        """``memory.failcnt`` (v1) / ``memory.events`` max (v2), OOM kills, and the peak."""
        limit = self.applied_limit
        if limit is None:
            return FaultEvidence(False, "memory-pressure did not bite: no limit was applied")
        if self._capture_error is not None or not self._after:
            return FaultEvidence.unreadable(self.type, self._capture_error or "not read")
        hits = self._after["limit_hits"] - self._before.get("limit_hits", 0)
        kills = self._after["oom_kill"] - self._before.get("oom_kill", 0)
        ooms = self._after["oom"] - self._before.get("oom", 0)
        counter = "memory.events max" if self.version == 2 else "memory.failcnt"
        figures: dict[str, Figure] = {
            "limit_bytes": limit, "peak_bytes": self._peak,
            "usage_at_injection_bytes": self.usage_at_injection or 0,
            "limit_hits": hits, "oom_kills": kills,
            "ok_per_s_before": round(window.baseline_ok_per_s, 1),
            "ok_per_s_during": round(window.ok_per_s, 1),
        }
        if self.version == 2:
            figures["oom_events"] = ooms
        peak = f"peak {_mib(self._peak)} of a {_mib(limit)} limit"
        if hits > 0 or kills > 0 or ooms > 0:
            return FaultEvidence(True, (
                f"the server's memory cgroup hit its {_mib(limit)} limit {hits} times "
                f"({counter}), {peak}, {kills} OOM kill(s); workload: {window.describe()}"),
                figures)
        if self.headroom_bytes is None and self._peak >= self.NEAR_LIMIT * limit:
            # (With headroom the limit is made from the usage: near it by construction.)
            return FaultEvidence(True, (
                f"the server's memory usage came within {_mib(limit - self._peak)} of the "
                f"limit: {peak}, {counter} 0"), figures)
        return FaultEvidence(False, (
            f"memory-pressure did not bite: {peak}, {counter} 0"), figures)
