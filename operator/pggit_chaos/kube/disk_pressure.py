"""``disk-pressure`` in a cluster: a balloon file in the target pod's data volume, via pods/exec.

Built by :class:`pggit_chaos.kube.substrate.KubeSubstrate` (only when the operator allows exec);
the operator's :func:`pggit_chaos.kube.faults.revert_intent` calls :func:`free_balloons` to undo
it from the intent alone. The script (:data:`DISK_SCRIPT`, POSIX ``sh`` with ``df -P``, ``cat``
and ``dd`` from the ``postgres`` image: no ``fallocate``, no ``head -c``) finds the data folder
(the ``-D`` of a postgres process of the container, else ``$PGDATA``, else the image's
default), sizes the balloon from ``df -P`` and writes zeros: to ENOSPC with ``cat /dev/zero``,
to a percentage with ``dd``. The balloon sits in ``base/pgsql_tmp`` named ``pgsql_tmp…`` when
that folder shares the filesystem to fill: PostgreSQL (14+) deletes such files itself when it
restarts after a crash, so a server that PANICs on the full disk comes back by itself instead
of crash-looping where no exec reaches it. A separate WAL volume gets it in ``pg_wal`` (the
revert retries the exec while the container restarts). The check runs the script's ``plan``
(exec allowed and working, the folder found, the balloon no larger than ``maxBalloonMi``)
before anything is injected; with the disk full the runner shows PostgreSQL's reaction with a
temporary table that must grow (gone with its session): ``could not extend file ...: No space
left on device``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

from pggit_chaos.errors import FaultError, InsufficientPrivileges
from pggit_chaos.faults.base import FaultEvidence, FaultIntent, Figure, WorkloadWindow
from pggit_chaos.kube import names
from pggit_chaos.kube.client import PODS, KubeClient
from pggit_chaos.kube.faults import exec_api, exec_sh, postgres_container

#: ``undo.kind`` of the intent.
UNDO_DISK_BALLOON = "kube-disk-balloon"
#: Seconds one exec may take (writing the balloon is the long one).
EXEC_TIMEOUT = 300.0
#: Seconds the revert keeps trying to reach a container that restarts.
FREE_RETRY_SECONDS = 90.0

#: ``sh -c DISK_SCRIPT disk-pressure MODE VOLUME FILL MAX_BYTES``; MODE plan | fill | free.
#: Prints ``key=value`` lines; exit 3 no data folder, 4 balloon too large, 5 write failed.
DISK_SCRIPT = r"""
mode=$1 volume=$2 fill=$3 max=$4
cg() { c=""; while IFS= read -r l; do c="$c$l;"; done < "$1"; }
cg /proc/$$/cgroup
me=$c
data=""
for p in /proc/[0-9]*; do
  [ "${p#/proc/}" = "$$" ] && continue
  { read -r comm < "$p/comm"; } 2>/dev/null || continue
  case "$comm" in postgres|postmaster) ;; *) continue ;; esac
  { cg "$p/cgroup"; } 2>/dev/null || continue
  [ "$c" = "$me" ] || continue
  set -- $(tr '\0' ' ' < "$p/cmdline" 2>/dev/null)
  while [ $# -gt 1 ]; do
    [ "$1" = -D ] && { data=$2; break; }
    shift
  done
  [ -n "$data" ] && break
done
[ -n "$data" ] || data=${PGDATA:-/var/lib/postgresql/data}
if [ ! -f "$data/PG_VERSION" ]; then
  echo "no PostgreSQL data folder found (tried $data)" >&2
  exit 3
fi
fsof() { df -P "$1" | awk 'NR > 1 { line = $0 } END { print line }'; }
target=$data
[ "$volume" = wal ] && target=$data/pg_wal/
set -- $(fsof "$target")
mount=$6
set -- $(fsof "$data/base")
if [ "$6" = "$mount" ]; then
  dir=$data/base/pgsql_tmp
  balloon=$dir/pgsql_tmp.pggit-chaos-balloon
  selfheal=1
else
  dir=$data/pg_wal
  balloon=$dir/.pggit-chaos-balloon
  selfheal=0
fi
report() {
  set -- $(fsof "$target")
  echo "data=$data"
  echo "balloon=$balloon"
  echo "selfheal=$selfheal"
  echo "mount=$6"
  echo "total=$(($2 * 1024))"
  echo "used=$(($3 * 1024))"
  echo "avail=$(($4 * 1024))"
}
if [ "$mode" = free ]; then
  size=0
  [ -f "$balloon" ] && size=$(wc -c < "$balloon")
  rm -f "$balloon"
  echo "freed=$size"
  report
  exit 0
fi
set -- $(fsof "$target")
total=$(($2 * 1024)) used=$(($3 * 1024)) avail=$(($4 * 1024))
if [ "$fill" = enospc ]; then
  want=$avail
else
  want=$((total / 100 * ${fill%\%} - used))
  [ $want -gt $avail ] && want=$avail
  [ $want -lt 0 ] && want=0
fi
echo "planned=$want"
if [ $want -gt $max ]; then
  echo "the balloon would be $((want / 1048576)) MiB, more than maxBalloonMi \
($((max / 1048576))): is $mount a volume of its own?" >&2
  exit 4
fi
if [ "$mode" = plan ]; then
  report
  exit 0
fi
mkdir -p "$dir"
owner=$(ls -nd "$data" | awk '{ print $3 ":" $4 }')
: > "$balloon" || exit 5
[ "$(id -u)" = 0 ] && chown "$owner" "$dir" "$balloon"
if [ "$fill" = enospc ]; then
  err=$(cat /dev/zero 2>&1 >> "$balloon")
  case "$err" in *"No space left"*) echo "refused=$err" ;;
    *) echo "writing the balloon failed: $err" >&2; exit 5 ;; esac
else
  mib=$((want / 1048576))
  kib=$(((want - mib * 1048576) / 1024))
  z() { dd if=/dev/zero bs=$1 count=$2 2>/dev/null >> "$balloon" || exit 5; }
  [ $mib -gt 0 ] && z 1048576 $mib
  [ $kib -gt 0 ] && z 1024 $kib
fi
echo "written=$(wc -c < "$balloon")"
report
"""


def parse_report(text: str) -> dict[str, str]:
    """The script's ``key=value`` lines as a dict."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def exec_script(client: KubeClient, namespace: str, pod: str, container: str,
                args: Sequence[str], api: Any = None, timeout: float = EXEC_TIMEOUT) -> str:
    """Run :data:`DISK_SCRIPT` with ``args`` in the container through ``pods/exec``; its
    stdout, or :class:`FaultError` with its stderr and exit code."""
    where = f"disk-pressure: {args[0]} through exec into {namespace}/{pod} ({container})"
    return exec_sh(client, namespace, pod, container, DISK_SCRIPT, ["disk-pressure", *args],
                   where, api=api, timeout=timeout)


def free_balloons(client: KubeClient, namespace: str, undo: Mapping[str, Any],
                  retry_seconds: float = FREE_RETRY_SECONDS) -> str:
    """Delete the balloon in each pod of the intent (the operator's revert from the intent).

    The exec is retried until ``retry_seconds`` (a container that restarts, a pod that is being
    recreated on the same volume); a pod still absent then is named, not an error."""
    freed: list[str] = []
    gone: list[str] = []
    for pod, container in dict(undo.get("containers") or {}).items():
        deadline = time.monotonic() + retry_seconds
        while True:
            try:
                out = parse_report(exec_script(
                    client, namespace, pod, str(container),
                    ["free", str(undo.get("volume") or "data"), "enospc", "0"], timeout=60))
                freed.append(f"{pod} ({out.get('freed', '0')} bytes)")
                break
            except FaultError:
                if time.monotonic() <= deadline:
                    time.sleep(1.0)  # a restarting container, or a pod being recreated
                    continue
                if client.find(PODS, namespace, pod) is not None:
                    raise
                gone.append(pod)
                break
    text = f"deleted the disk-pressure balloon in {len(freed)} pod(s): {', '.join(freed)}"
    return text + (f"; pod(s) gone, not reached: {', '.join(gone)}" if gone else "")


class DiskPressure:
    """Fill each target pod's data (or WAL) volume with a balloon file; delete it on revert."""

    type = "disk-pressure"
    recovery_from_injection = False

    def __init__(self, client: KubeClient, namespace: str, pods: Sequence[Mapping[str, Any]],
                 allow_exec: bool, dsn: str, volume: str, fill: str,
                 max_balloon_mi: int) -> None:
        self.client = client
        self.namespace = namespace
        self.allow_exec = allow_exec
        self.dsn = dsn
        self.volume = volume
        self.fill = fill
        self.max_bytes = int(max_balloon_mi) << 20
        self.containers = {str(p["metadata"]["name"]): postgres_container(p) for p in pods}
        how = "to the last byte" if fill == "enospc" else f"to {fill}"
        self._intent = FaultIntent(
            type=self.type, target=", ".join(f"pod {namespace}/{p}" for p in self.containers),
            undo={"kind": UNDO_DISK_BALLOON, "namespace": namespace, "volume": volume,
                  "containers": self.containers},
            description=f"fill the {volume} volume {how} with a balloon file through pods/exec")
        self._api: Any = None
        #: pod -> the script's report of the plan, the fill, the free.
        self.planned: dict[str, dict[str, str]] = {}
        self.filled: dict[str, dict[str, str]] = {}
        self.freed: dict[str, dict[str, str]] = {}
        #: PostgreSQL's answer to a write that needs disk space, with the disk full.
        self.postgres_error = ""

    def _args(self, mode: str) -> list[str]:
        return [mode, self.volume, self.fill, str(self.max_bytes)]

    def check(self) -> None:
        """Refused before injection unless exec is allowed, the data folder is found and the
        balloon would be at most ``maxBalloonMi`` (the script's ``plan``)."""
        if not self.allow_exec:
            raise InsufficientPrivileges(
                "disk-pressure writes its balloon through pods/exec, which the operator's "
                f"settings do not allow: {names.EXEC_SWITCH}")
        self._api = exec_api(self.client)
        for pod, container in self.containers.items():
            try:
                self.planned[pod] = parse_report(exec_script(
                    self.client, self.namespace, pod, container, self._args("plan"), self._api))
            except FaultError as exc:
                raise FaultError(f"{exc}; nothing was injected") from None

    def intent(self) -> FaultIntent:
        return self._intent

    def plan_lines(self) -> list[str]:
        return [f"pod {pod}: balloon {plan.get('balloon')} of {plan.get('planned')} bytes on "
                f"{plan.get('mount')}" for pod, plan in self.planned.items()]

    def inject(self) -> None:
        for pod, container in self.containers.items():
            self.filled[pod] = parse_report(exec_script(
                self.client, self.namespace, pod, container, self._args("fill"), self._api))
        if self.fill == "enospc":
            self.postgres_error = _postgres_write_error(self.dsn)

    def revert(self) -> None:
        for pod, container in self.containers.items():
            deadline = time.monotonic() + FREE_RETRY_SECONDS
            while True:
                try:
                    self.freed[pod] = parse_report(exec_script(
                        self.client, self.namespace, pod, container, self._args("free"),
                        self._api, timeout=60))
                    break
                except FaultError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1.0)

    def evidence(self, window: WorkloadWindow) -> FaultEvidence:
        """Each volume read back full (``df -P`` in the container after the fill; to ENOSPC:
        the kernel refused the balloon's last write) and PostgreSQL's own error for a write
        that needed space."""
        figures: dict[str, Figure] = {
            "pods_filled": len(self.filled), "volume": self.volume, "fill": self.fill,
            "failed_during": window.failed, "indeterminate_during": window.indeterminate}
        full = []
        for pod, report in self.filled.items():
            total, used = int(report.get("total", 0)), int(report.get("used", 0))
            avail, written = int(report.get("avail", 0)), int(report.get("written", 0))
            percent = round(100 * used / total, 1) if total else 0.0
            figures[f"{pod}_balloon_bytes"] = written
            figures[f"{pod}_available_bytes_after_fill"] = avail
            figures[f"{pod}_used_percent_after_fill"] = percent
            figures[f"{pod}_freed_bytes"] = int((self.freed.get(pod) or {}).get("freed", 0))
            if self.fill == "enospc":  # the kernel refused the balloon's last write: full
                # (the free space read just after may already be more than 0: PostgreSQL
                # deletes files too, e.g. a dropped table's)
                ok = "No space left" in report.get("refused", "")
            else:
                ok = written > 0 and percent >= int(self.fill.rstrip("%"))
            if ok:
                full.append(f"{pod} {percent}% used ({written} byte balloon, "
                            f"{avail} bytes free just after)")
        if self.postgres_error:
            figures["postgres_error"] = self.postgres_error[:300]
        if not self.filled or len(full) != len(self.filled):
            return FaultEvidence(False, "disk-pressure did not bite: the volume was not filled "
                                 f"as asked ({self.fill}) in every pod", figures)
        summary = f"{self.volume} volume filled: {'; '.join(full)}"
        if self.fill == "enospc":
            if not any(marker in self.postgres_error for marker in ENOSPC_ERRORS):
                return FaultEvidence(False, "disk-pressure did not bite: PostgreSQL did not "
                                     "report the full disk for a write that needed space "
                                     f"({self.postgres_error or 'no error'})", figures)
            summary += f"; PostgreSQL: {self.postgres_error}"
        summary += (f"; workload: {window.failed} failed, {window.indeterminate} "
                    "indeterminate")
        return FaultEvidence(True, summary, figures)


#: PostgreSQL's words for a write the full disk refused: a table that cannot grow, or (seen on
#: the real node) a new session refused because its relation-cache init file cannot be written.
ENOSPC_ERRORS = ("No space left on device", "could not extend file", "could not write init file")


def _postgres_write_error(dsn: str) -> str:
    """PostgreSQL's answer to a temporary table that must grow on the full disk (the table
    goes with its session: nothing stays in the user's database); '' if it succeeded."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5,
                             application_name="pggit-chaos-disk-probe") as conn:
            conn.execute("SET temp_buffers = '1MB'")
            conn.execute("CREATE TEMP TABLE pggit_chaos_disk_probe AS "
                         "SELECT repeat('x', 1000) AS pad FROM generate_series(1, 20000)")
    except psycopg.Error as exc:
        text = " ".join(str(exc).split())
        severity = getattr(getattr(exc, "diag", None), "severity", None) or "ERROR"
        return f"{severity}: {text}"[:400]
    return ""
