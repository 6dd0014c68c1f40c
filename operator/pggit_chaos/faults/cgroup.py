"""Resource faults on the embedded server's processes through cgroups (v1 and v2).

``cpu-throttle`` (CPU quota), ``memory-pressure`` (memory limit) and ``pod-pause`` (freezer):
each creates a cgroup ``pggit-chaos-<intent id>``, moves the postmaster and all its current
children in (new backends inherit it), applies its setting, and on revert thaws, moves every
process back to the cgroup it came from and removes the cgroup. Built by the local substrate;
:func:`revert_cgroup` undoes a recorded intent without the Python objects (``cleanup``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pggit_chaos.errors import FaultError, InsufficientPrivileges
from pggit_chaos.faults.base import FaultIntent
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
        self.check()

    # -- what subclasses provide -------------------------------------------------------------
    def _settings(self) -> dict[str, str]:
        """File name -> value to write into the new cgroup before processes move in."""
        raise FaultError("a cgroup fault must say what it sets")  # pragma: no cover

    def _after_move(self, folder: Path) -> None:
        """Hook run once every process is inside (the freezer freezes here)."""

    def _describe(self) -> str:
        return self.type

    # -- privileges ----------------------------------------------------------------------------
    def check(self) -> None:
        """Raise InsufficientPrivileges unless we can create cgroups in the right hierarchy."""
        root = hierarchy_root(self.controller, self.version)
        if self.version == 2:
            controllers = (root / "cgroup.controllers").read_text().split()
            if self.controller != "freezer" and self.controller not in controllers:
                raise InsufficientPrivileges(
                    f"{self.type} needs the cgroup v2 controller {self.controller!r}, "
                    f"which {root} does not offer"
                )
        if os.geteuid() != 0 or not os.access(root, os.W_OK):
            raise InsufficientPrivileges(
                f"{self.type} needs write access to {root} (run as root)"
            )

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

    def _enable_v2_controller(self, parent: Path) -> None:
        if self.controller == "freezer":
            return
        control = parent / "cgroup.subtree_control"
        if self.controller in control.read_text().split():
            return
        try:
            _write(control, f"+{self.controller}")
        except OSError as exc:
            raise FaultError(f"cannot enable the {self.controller} controller in {parent}: {exc}"
                             ) from exc

    def inject(self) -> None:
        self.check()
        plan = self._make_plan()
        if self._intent is None:
            self.intent()
        if plan.version == 2:
            self._enable_v2_controller(plan.path.parent)
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
            text = (self.path / "cpu.stat").read_text()
        except OSError:
            return {}
        return {key: int(value) for key, value in (line.split() for line in text.splitlines())}


class MemoryPressure(CgroupFault):
    """A memory limit of ``limit_bytes`` for the server's processes."""

    type = "memory-pressure"
    controller = "memory"

    def __init__(self, postmaster: Callable[[], int | None], limit_bytes: int = 128 * 1024**2,
                 *, intent_id: str | None = None) -> None:
        if limit_bytes < 4 * 1024**2:
            raise FaultError(f"memory-pressure: a limit of {limit_bytes} bytes is too small")
        self.limit_bytes = limit_bytes
        super().__init__(postmaster, intent_id=intent_id)

    def _settings(self) -> dict[str, str]:
        # The limit is set while the cgroup is still empty: lowering it below the usage of
        # processes already inside would make the kernel reclaim or refuse (EBUSY).
        if self.version == 2:
            return {"memory.max": str(self.limit_bytes)}
        return {"memory.limit_in_bytes": str(self.limit_bytes)}

    def _describe(self) -> str:
        return f"memory-pressure with a {self.limit_bytes // 1024**2} MiB limit"


class PodPause(CgroupFault):
    """Freeze the server's processes (cgroup freezer); revert thaws them first."""

    type = "pod-pause"
    controller = "freezer"

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
