"""A small test kubelet: it gives the API emulator's pods life on this machine.

No cluster runs here, so the tests' "cluster" is the API emulator plus this module, which plays
the parts of a StatefulSet controller, the Job controller, the kubelet and the CNI:

* **Target pods** (:meth:`Kubelet.add_targets`, a tiny StatefulSet ``<name>-0..``): each pod is
  backed by a real :class:`~pggit_chaos.local.server.EmbeddedPostgres` with the embedded pgGit
  core installed (optionally a broken variant from ``tests/pggit_variants`` applied), in a
  network namespace of its own (its own IP, port 5432) and in cgroups of its own (cpu and
  memory, like a container's). A Secret (``pggit-db``, key ``dsn``) holds a DSN reaching pod 0
  by IP as user ``postgres``, database ``postgres`` (trust auth: no password).
  Deleting such a pod SIGKILLs its server (a real crash); after ``restart_delay`` the pod is
  created again (same name, new uid, Pending) and turns Running/Ready once the restarted server
  (same data directory: real crash recovery) accepts connections. A change of the container's
  resources (``pods/{name}/resize``) becomes the cgroup limits of the pod's processes (CFS
  quota / ``cpu.max``, ``cpu.shares`` / ``cpu.weight``, ``memory.limit_in_bytes`` /
  ``memory.max``), reported back in ``containerStatuses[].resources`` as a 1.33+ kubelet does.
  NetworkPolicies selecting a pod become iptables rules in the pod's namespace, in chains of
  our own (``PGGIT-KUBELET-IN`` / ``-OUT``) that are rewritten whenever the wanted rules change.
  ``pods/exec`` into a target pod (served when the kubelet is given the in-process API server,
  ``api_server=``) runs the command inside the pod: in its cgroups and network namespace, as
  root, with a container's ``PATH`` (:meth:`Kubelet.exec_in_pod`).
* **Job pods**: a Job (batch/v1) gets a pod ``<job>-<5 random>`` (by ``generateName``, as the
  Job controller makes it) whose container's ``command`` + ``args`` run as a local process
  (``pggit-chaos`` is this environment's console script, ``python`` this interpreter) with the
  container's env resolved as a kubelet does
  (``value`` with ``$(VAR)`` expansion, ``secretKeyRef``, ``configMapKeyRef``, ``fieldRef``,
  ``envFrom``), ``KUBECONFIG`` of the identity its service account maps to, and
  ``PGGIT_CHAOS_TERMINATION_MESSAGE_PATH`` standing in for ``terminationMessagePath``. Exit
  code, termination message and conditions go into pod and Job status (Kubernetes 1.31+
  conditions: SuccessCriteriaMet/Complete, FailureTarget/Failed).

Every API call is made through :class:`~pggit_chaos.kube.client.KubeClient` with the
``kubelet`` identity, from one background thread that lists pods, Jobs and NetworkPolicies every
``poll_interval`` seconds. :meth:`Kubelet.stop` (also on an exception in the ``with`` block)
kills every process, stops every server and removes every namespace, chain and cgroup.

What this is not: a scheduler (one node), a container runtime (no images, no filesystem
isolation, Job processes run as root in the host's network namespace like ``hostNetwork``
pods; an exec'd command sees the host's PID namespace, not one per pod, so the
postmaster is never PID 1 as in the ``postgres`` image), liveness/readiness probes (Ready =
the server accepts connections / the process runs), ``restartPolicy: OnFailure`` (treated as
Never), Job parallelism/completions > 1, pod failure policies, backoff delays between
retries, or ``ipBlock.except`` in NetworkPolicies.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from pggit_chaos.kube.builders import parse_quantity
from pggit_chaos.kube.client import (
    CONFIG_MAPS,
    EVENTS,
    JOBS,
    NAMESPACES,
    NETWORK_POLICIES,
    PODS,
    Api,
    ApiError,
    KubeClient,
)
from pggit_chaos.local.cgroup import (
    CGROUP_PREFIX,
    cgroup_version,
    enable_v2_controller,
    process_cgroup,
    read_flat_keyed,
    revert_cgroup,
)
from pggit_chaos.local.netns import Netns, subnet_lock
from pggit_chaos.local.server import EmbeddedPostgres, child_pids

__all__ = [
    "CHAIN_IN",
    "CHAIN_OUT",
    "SECRETS",
    "Kubelet",
    "PodCgroups",
    "TargetSet",
    "kubelet_fixture",
    "label_selector_matches",
    "policy_rules",
    "target_set_fixture",
]

SECRETS = Api("", "v1", "secrets")
#: The identity the kubelet itself uses (a key of the ``kubeconfigs`` mapping).
KUBELET_IDENTITY = "kubelet"
#: The identity a Job pod's service account maps to unless ``service_accounts`` says otherwise.
DEFAULT_IDENTITY = "runner"
#: Our iptables chains inside each target pod's network namespace.
CHAIN_IN = "PGGIT-KUBELET-IN"
CHAIN_OUT = "PGGIT-KUBELET-OUT"
#: The node every pod runs on.
NODE_NAME = "pggit-kubelet"
NODE_IP = "127.0.0.1"
#: The server's port inside each target pod's namespace.
POSTGRES_PORT = 5432
#: Labels a target pod gets unless ``add_targets`` is given others (the experiments select it).
DEFAULT_TARGET_LABELS = {"app.kubernetes.io/name": "pggit-postgres"}
DEFAULT_TARGET_RESOURCES: dict[str, Any] = {"requests": {"cpu": "100m", "memory": "128Mi"}}
#: CFS period the kubelet uses (100 ms) and its smallest quota (1 ms).
CFS_PERIOD_US = 100_000
MIN_QUOTA_US = 1_000
#: cpu.shares of a pod without a cpu request (the kubelet's MinShares).
MIN_SHARES = 2
#: Termination message limits: the file's first 4096 bytes; the log fallback's 80 lines/2 KiB.
MESSAGE_MAX = 4096
FALLBACK_LINES = 80
FALLBACK_BYTES = 2048
#: Job conditions' messages, as the 1.31+ Job controller writes them.
MSG_BACKOFF = "Job has reached the specified backoff limit"
MSG_DEADLINE = "Job was active longer than specified deadline"
MSG_COMPLETE = "Reached expected number of succeeded pods"
_MARKER = "PGGIT_KUBELET_POD_UID"
_EXPAND = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


# ------------------------------------------------------------------------------- helpers
def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = obj.get("metadata") or {}
    return meta


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = _meta(obj)
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _uid(obj: Mapping[str, Any]) -> str:
    meta = _meta(obj)
    return str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}"
               f"@{meta.get('creationTimestamp', '')}")


def cpu_millis(quantity: object) -> int:
    """``"250m"`` -> 250, ``"0.5"`` -> 500, ``2`` -> 2000 (rounded up, as the kubelet does)."""
    value = parse_quantity(quantity) * 1000
    return int(value.to_integral_value(rounding="ROUND_CEILING"))


def memory_bytes(quantity: object) -> int:
    value: Decimal = parse_quantity(quantity)
    return int(value.to_integral_value(rounding="ROUND_CEILING"))


def _normal_resources(resources: Mapping[str, Any] | None) -> tuple[int | None, ...]:
    """(cpu request, cpu limit, memory request, memory limit) in millicores/bytes; None = unset."""
    resources = resources or {}
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}

    def get(group: Mapping[str, Any], name: str, parse: Any) -> int | None:
        value = group.get(name)
        return None if value is None else int(parse(value))

    cpu_limit = get(limits, "cpu", cpu_millis)
    mem_limit = get(limits, "memory", memory_bytes)
    cpu_request = get(requests, "cpu", cpu_millis)
    mem_request = get(requests, "memory", memory_bytes)
    # A limit without a request: the request defaults to the limit (API server defaulting).
    return (cpu_request if cpu_request is not None else cpu_limit, cpu_limit,
            mem_request if mem_request is not None else mem_limit, mem_limit)


def qos_class(resources: Mapping[str, Any] | None) -> str:
    cpu_req, cpu_lim, mem_req, mem_lim = _normal_resources(resources)
    if all(value is None for value in (cpu_req, cpu_lim, mem_req, mem_lim)):
        return "BestEffort"
    if cpu_lim is not None and mem_lim is not None and cpu_req == cpu_lim and mem_req == mem_lim:
        return "Guaranteed"
    return "Burstable"


def label_selector_matches(selector: Mapping[str, Any] | None,
                           labels: Mapping[str, str] | None) -> bool:
    """A LabelSelector (matchLabels + matchExpressions) against labels; ``{}`` matches all."""
    labels = labels or {}
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key = expression.get("key")
        operator = expression.get("operator")
        values = list(expression.get("values") or [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True


def _expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined variables replaced, ``$$`` is ``$``."""
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)
    return _EXPAND.sub(replace, text)


def _condition(type_: str, status: str, reason: str | None = None, message: str | None = None,
               *, probe: bool = False) -> dict[str, Any]:
    stamp = now_rfc3339()
    condition: dict[str, Any] = {"type": type_, "status": status, "lastTransitionTime": stamp}
    if probe:
        condition["lastProbeTime"] = stamp
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def _pod_conditions(ready: bool, *, scheduled: bool = True, started: bool = True,
                    reason: str | None = None) -> list[dict[str, Any]]:
    status = "True" if ready else "False"
    why = None if ready else (reason or "ContainersNotReady")
    return [
        _condition("PodReadyToStartContainers", "True" if started else "False"),
        _condition("Initialized", "True"),
        _condition("Ready", status, why),
        _condition("ContainersReady", status, why),
        _condition("PodScheduled", "True" if scheduled else "False"),
    ]


def console_script(name: str = "pggit-chaos") -> str:
    """This Python environment's console script ``name`` (not a pyenv shim, when avoidable)."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"console script {name} not found beside {sys.executable}")
    return found


def _kill_marked(marker: str) -> list[int]:
    """SIGKILL every live process whose environment carries ``marker`` (a pod's processes)."""
    needle = f"{_MARKER}={marker}".encode()
    killed: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
        except OSError:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(entry.name), signal.SIGKILL)
            killed.append(int(entry.name))
    return killed


def _reap(pids: Sequence[int], timeout: float = 5.0) -> None:
    """Wait for ``pids`` (our children or orphans we adopted as subreaper) to be gone."""
    deadline = time.monotonic() + timeout
    pending = list(pids)
    while pending and time.monotonic() < deadline:
        still = []
        for pid in pending:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done != pid:
                    still.append(pid)
            except ChildProcessError:
                if Path(f"/proc/{pid}").exists():
                    with contextlib.suppress(OSError):
                        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                        if state != "Z":
                            still.append(pid)
        pending = still
        if pending:
            time.sleep(0.02)


def _iptables(netns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", "netns", "exec", netns, "iptables", "-w", "5", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed: {result.stderr.strip()}")
    return result


# --------------------------------------------------------------------- NetworkPolicy rules
def _policy_types(policy: Mapping[str, Any]) -> list[str]:
    spec = policy.get("spec") or {}
    types = spec.get("policyTypes")
    if types:
        return [str(t) for t in types]
    return ["Ingress", "Egress"] if "egress" in spec else ["Ingress"]


def _port_args(ports: Sequence[Mapping[str, Any]] | None,
               named: Mapping[str, int]) -> list[list[str]] | None:
    """iptables port matches for a rule's ``ports`` (None = any port; [] = none resolvable)."""
    if not ports:
        return None
    out: list[list[str]] = []
    for port in ports:
        protocol = str(port.get("protocol") or "TCP").lower()
        number = port.get("port")
        if number is None:
            out.append(["-p", protocol])
            continue
        if isinstance(number, str) and not number.isdigit():
            if number not in named:
                continue  # a named port the pod does not have selects nothing
            number = named[number]
        text = str(number)
        if port.get("endPort") is not None:
            text = f"{number}:{port['endPort']}"
        out.append(["-p", protocol, "--dport", text])
    return out


def _peer_addresses(peers: Sequence[Mapping[str, Any]] | None, namespace: str,
                    pods: Sequence[Mapping[str, Any]],
                    namespace_labels: Mapping[str, Mapping[str, str]]) -> list[str] | None:
    """CIDRs a rule's ``from``/``to`` allows (None = anywhere)."""
    if not peers:
        return None
    cidrs: list[str] = []
    for peer in peers:
        block = peer.get("ipBlock")
        if block is not None:
            if not block.get("except"):  # except ranges are not expressible here: stricter
                cidrs.append(str(block["cidr"]))
            continue
        pod_selector = peer.get("podSelector")
        ns_selector = peer.get("namespaceSelector")
        for pod in pods:
            pod_ns, _ = _key(pod)
            if ns_selector is None:
                if pod_ns != namespace:
                    continue
            elif not label_selector_matches(ns_selector, namespace_labels.get(pod_ns, {})):
                continue
            if pod_selector is not None and not label_selector_matches(
                    pod_selector, _meta(pod).get("labels")):
                continue
            ip = (pod.get("status") or {}).get("podIP")
            host_network = (pod.get("spec") or {}).get("hostNetwork")
            if ip and not host_network:
                cidrs.append(f"{ip}/32")
    return cidrs


def policy_rules(policies: Sequence[Mapping[str, Any]], pod: Mapping[str, Any],
                 pods: Sequence[Mapping[str, Any]] = (),
                 namespace_labels: Mapping[str, Mapping[str, str]] | None = None,
                 *, cut_established: bool = True,
                 ) -> tuple[list[list[str]], list[list[str]]]:
    """The rules of our INPUT and OUTPUT chains for ``pod`` under ``policies`` (pure).

    A direction no selecting policy isolates gets no rules (everything allowed, as a CNI does).
    An isolated direction allows loopback, replies to connections the other direction opened,
    then each rule's peers x ports, and drops the rest — also packets of connections opened
    before the policy (``cut_established``; Kubernetes leaves that to the CNI), unless
    ``cut_established`` is False.
    """
    namespace, _ = _key(pod)
    labels = _meta(pod).get("labels") or {}
    named: dict[str, int] = {}
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name"):
                named[str(port["name"])] = int(port["containerPort"])
    selecting = [p for p in policies if _key(p)[0] == namespace
                 and label_selector_matches((p.get("spec") or {}).get("podSelector"), labels)]
    chains: dict[str, list[list[str]]] = {"Ingress": [], "Egress": []}
    for direction, key, peer_key, flag, iface in (
            ("Ingress", "ingress", "from", "-s", "-i"), ("Egress", "egress", "to", "-d", "-o")):
        isolating = [p for p in selecting if direction in _policy_types(p)]
        if not isolating:
            continue
        rules: list[list[str]] = [[iface, "lo", "-j", "ACCEPT"],
                                  ["-m", "conntrack", "--ctdir", "REPLY", "-j", "ACCEPT"]]
        if not cut_established:
            rules.append(["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"])
        for policy in isolating:
            for rule in (policy.get("spec") or {}).get(key) or []:
                addresses = _peer_addresses(rule.get(peer_key), namespace, pods,
                                            namespace_labels or {})
                ports = _port_args(rule.get("ports"), named)
                sources: list[list[str]] = ([[]] if addresses is None
                                            else [[flag, cidr] for cidr in addresses])
                matches: list[list[str]] = [[]] if ports is None else ports
                for source in sources:
                    for match in matches:
                        candidate = [*source, *match, "-j", "ACCEPT"]
                        if candidate not in rules:
                            rules.append(candidate)
        rules.append(["-j", "DROP"])
        chains[direction] = rules
    return chains["Ingress"], chains["Egress"]


# ----------------------------------------------------------------------------- cgroups
class PodCgroups:
    """A target pod's cgroups (cpu and memory), made before its server starts in them.

    cgroup v1: one folder per controller (``<our cgroup>/pggit-chaos-<id>``); v2: one folder
    with both controllers enabled. Resources are written as the kubelet writes a container's.
    """

    def __init__(self, ident: str) -> None:
        self.version = cgroup_version()
        self.id = ident
        self.paths: dict[str, Path] = {}
        self.origins: dict[str, Path] = {}
        for controller in ("cpu", "memory"):
            origin = process_cgroup(os.getpid(), controller, self.version)
            parent = origin if self.version == 1 else Path("/sys/fs/cgroup")
            self.origins[controller] = origin
            self.paths[controller] = parent / f"{CGROUP_PREFIX}{ident}"

    @property
    def folders(self) -> list[Path]:
        return sorted(set(self.paths.values()))

    def procs_files(self) -> list[Path]:
        return [folder / "cgroup.procs" for folder in self.folders]

    def create(self) -> None:
        for controller, path in self.paths.items():
            if self.version == 2:
                enable_v2_controller(path.parent, controller)
            path.mkdir(exist_ok=True)

    def _write(self, controller: str, name: str, value: str) -> None:
        with open(self.paths[controller] / name, "w", encoding="utf-8") as handle:
            handle.write(value)

    def read(self, controller: str, name: str) -> str:
        return (self.paths[controller] / name).read_text()

    def memory_usage(self) -> int:
        name = "memory.current" if self.version == 2 else "memory.usage_in_bytes"
        return int(self.read("memory", name))

    def cpu_stat(self) -> dict[str, int]:
        return read_flat_keyed(self.paths["cpu"] / "cpu.stat")

    def limits(self) -> dict[str, str]:
        """What the kernel holds now: the cpu quota and memory limit files' contents."""
        if self.version == 2:
            return {"cpu.max": self.read("cpu", "cpu.max").strip(),
                    "memory.max": self.read("memory", "memory.max").strip()}
        return {"cpu.cfs_quota_us": self.read("cpu", "cpu.cfs_quota_us").strip(),
                "cpu.cfs_period_us": self.read("cpu", "cpu.cfs_period_us").strip(),
                "cpu.shares": self.read("cpu", "cpu.shares").strip(),
                "memory.limit_in_bytes": self.read("memory", "memory.limit_in_bytes").strip()}

    def apply(self, resources: Mapping[str, Any] | None) -> None:
        """Write the container's resources as the kubelet does; OSError/ValueError on failure."""
        cpu_request, cpu_limit, _, mem_limit = _normal_resources(resources)
        if mem_limit is not None and mem_limit < self.memory_usage():
            raise ValueError(f"memory limit {mem_limit} is below the container's usage "
                             f"{self.memory_usage()}")
        shares = MIN_SHARES if cpu_request is None else max(MIN_SHARES, cpu_request * 1024 // 1000)
        quota = None if cpu_limit is None else max(MIN_QUOTA_US, cpu_limit * CFS_PERIOD_US // 1000)
        if self.version == 2:
            weight = 1 + ((shares - 2) * 9999) // 262142
            self._write("cpu", "cpu.weight", str(weight))
            self._write("cpu", "cpu.max", f"{'max' if quota is None else quota} {CFS_PERIOD_US}")
            self._write("memory", "memory.max", "max" if mem_limit is None else str(mem_limit))
            return
        self._write("cpu", "cpu.shares", str(shares))
        self._write("cpu", "cpu.cfs_period_us", str(CFS_PERIOD_US))
        self._write("cpu", "cpu.cfs_quota_us", "-1" if quota is None else str(quota))
        self._write("memory", "memory.limit_in_bytes",
                    "-1" if mem_limit is None else str(mem_limit))

    def remove(self) -> None:
        errors = []
        for controller, path in self.paths.items():
            try:
                revert_cgroup({"path": str(path), "version": self.version,
                               "default_origin": str(self.origins[controller]), "origins": {}})
            except Exception as exc:
                errors.append(f"{path}: {exc}")
        if errors:
            raise RuntimeError("; ".join(errors))


class _PodPostgres(EmbeddedPostgres):
    """An embedded server started inside several cgroups at once (cpu and memory on v1)."""

    def __init__(self, *, procs_files: Sequence[Path], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.procs_files = list(procs_files)

    def command(self) -> list[str]:
        cmd = super().command()
        if not self.procs_files:
            return cmd
        join = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 1; shift; done; shift; exec "$@"'
        return ["sh", "-c", join, "sh", *map(str, self.procs_files), "--", *cmd]


# ---------------------------------------------------------------------------- targets
@dataclass
class _Replica:
    """One target pod: its server, namespace and cgroups outlive the pod objects."""

    target: TargetSet
    ordinal: int
    name: str
    netns: Netns
    cgroups: PodCgroups
    server: _PodPostgres
    uid: str | None = None
    #: creating | starting | running | down
    state: str = "creating"
    recreate_at: float = 0.0
    started_at: str = ""
    restart_count: int = 0
    last_state: dict[str, Any] = field(default_factory=dict)
    actuated: dict[str, Any] | None = None
    resize_condition: dict[str, Any] | None = None
    rules: tuple[list[list[str]], list[list[str]]] = ([], [])
    worker: threading.Thread | None = None
    start_error: str | None = None
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return self.target.namespace

    @property
    def ip(self) -> str:
        return self.netns.ns_address


@dataclass
class TargetSet:
    """A tiny StatefulSet: pods ``<name>-0..`` each backed by a real PostgreSQL with pgGit."""

    namespace: str
    name: str
    labels: dict[str, str]
    resources: dict[str, Any]
    variant: str | None
    secret: str
    secret_key: str
    replicas: list[_Replica] = field(default_factory=list)

    @property
    def pods(self) -> list[str]:
        return [replica.name for replica in self.replicas]

    @property
    def dsn(self) -> str:
        """The DSN the Secret holds (pod 0's server by IP, database postgres)."""
        return self.replicas[0].server.dsn("postgres")


# ------------------------------------------------------------------------------- jobs
@dataclass
class _Job:
    namespace: str
    name: str
    uid: str
    body: dict[str, Any]
    start_time: str
    start_mono: float
    succeeded: int = 0
    failed: int = 0
    pods: list[_JobPod] = field(default_factory=list)
    failure_target: tuple[str, str] | None = None
    finished: bool = False
    deleted: bool = False
    last_status: dict[str, Any] | None = None
    conditions: list[dict[str, Any]] = field(default_factory=list)
    completion_time: str | None = None
    #: Messages of the FailedCreate Events posted for this Job.
    failed_creates: set[str] = field(default_factory=set)


@dataclass
class _JobPod:
    namespace: str
    name: str
    uid: str
    job: _Job
    spec: dict[str, Any]
    meta: dict[str, Any]
    folder: Path
    #: pending | running | terminating | done
    state: str = "pending"
    process: subprocess.Popen[bytes] | None = None
    config_error: str | None = None
    next_try: float = 0.0
    started_at: str = ""
    kill_at: float | None = None
    delete_after: bool = False
    gone: bool = False
    exit_code: int | None = None
    reason: str = ""
    message: str = ""
    finished_at: str = ""
    last_status: dict[str, Any] | None = None
    #: Seen in a pod listing (a pod made during a tick is not in that tick's listing).
    listed: bool = False
    created_mono: float = field(default_factory=time.monotonic)

    @property
    def log(self) -> Path:
        return self.folder / "container.log"

    @property
    def termination_file(self) -> Path:
        return self.folder / "termination-log"

    @property
    def container(self) -> dict[str, Any]:
        containers: list[dict[str, Any]] = self.spec.get("containers") or [{}]
        return containers[0]

    @property
    def grace(self) -> float:
        value = self.spec.get("terminationGracePeriodSeconds")
        return 30.0 if value is None else float(value)


class _ConfigError(Exception):
    """The container's config cannot be made (CreateContainerConfigError)."""


# ------------------------------------------------------------------------------ kubelet
def _hides_code(mount_path: Path) -> bool:
    """True when mounting over ``mount_path`` would hide the code a Job pod runs: this
    checkout, the installed package or the Python environment (a CI clone under /tmp)."""
    import pggit_chaos

    target = mount_path.resolve()
    code = [Path(pggit_chaos.__file__).resolve().parent, Path(__file__).resolve().parent,
            Path(sys.prefix).resolve(), Path(sys.executable).resolve().parent]
    return any(target == path or target in path.parents for path in code)


class Kubelet:
    """The test kubelet; a context manager (started on enter, everything removed on exit).

    ``kubeconfigs`` maps identities to kubeconfig paths (the emulator fixture's
    ``kubeconfigs``); the kubelet uses ``kubelet_identity``'s (or ``client``). A Job pod's
    ``KUBECONFIG`` is that of ``service_accounts[pod's serviceAccountName]``, else of
    ``default_identity``. ``restart_delay``: seconds a deleted target pod stays away before
    it is recreated. ``extra_env``: added to every Job process's environment (after the base,
    before the pod's own env). ``cut_established``: an isolating NetworkPolicy also drops the
    packets of connections opened before it (see :func:`policy_rules`). ``api_server``: the
    in-process ``KubeEmulator`` whose ``pods/exec`` for this node the kubelet serves.
    """

    def __init__(self, kubeconfigs: Mapping[str, str | os.PathLike[str]], *,
                 client: KubeClient | None = None,
                 kubelet_identity: str = KUBELET_IDENTITY,
                 service_accounts: Mapping[str, str] | None = None,
                 default_identity: str = DEFAULT_IDENTITY,
                 poll_interval: float = 0.05,
                 restart_delay: float = 0.5,
                 extra_env: Mapping[str, str] | None = None,
                 cut_established: bool = True,
                 api_server: Any = None) -> None:
        self.kubeconfigs = {key: str(value) for key, value in kubeconfigs.items()}
        if client is None:
            if kubelet_identity not in self.kubeconfigs:
                raise KeyError(f"no kubeconfig for the kubelet identity {kubelet_identity!r}")
            client = KubeClient.from_environment(self.kubeconfigs[kubelet_identity])
        self.client = client
        self.service_accounts = dict(service_accounts or {})
        self.default_identity = default_identity
        self.poll_interval = poll_interval
        self.restart_delay = restart_delay
        self.extra_env = dict(extra_env or {})
        self.cut_established = cut_established
        self.token = uuid.uuid4().hex[:6]
        # Not under /tmp: a Job pod's emptyDir is bind-mounted over /tmp in its namespace.
        self.workdir = Path(tempfile.mkdtemp(prefix="pggit-kubelet-", dir=_workdir_parent()))
        self.targets: list[TargetSet] = []
        self.jobs: dict[str, _Job] = {}
        self.job_pods: dict[str, _JobPod] = {}
        #: Exceptions the background loop met (each with its traceback), for the tests.
        self.errors: list[str] = []
        #: Names of every netns and cgroup folder and server folder made, for leftover checks.
        self.made: list[str] = []
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ticks = 0
        self._namespace_labels: dict[str, dict[str, str]] = {}
        #: The in-process API server (``cluster.emulator.KubeEmulator``) whose ``pods/exec``
        #: this kubelet serves for its node; None: no exec.
        self.api_server = api_server
        #: Processes started by ``pods/exec`` (killed on stop), by their marker.
        self.exec_processes: dict[str, subprocess.Popen[bytes]] = {}

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Kubelet:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="test-kubelet", daemon=True)
            self._thread.start()
            if self.api_server is not None:
                self.api_server.attach_node(NODE_NAME, self.exec_in_pod)
        return self

    def __enter__(self) -> Kubelet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Kill every process, stop every server, remove every namespace, chain and cgroup."""
        self._stop.set()
        if self.api_server is not None:
            self.api_server.detach_node(NODE_NAME)
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        problems: list[str] = []
        for marker, process in list(self.exec_processes.items()):
            try:
                self._kill_exec(marker, process)
            except Exception as exc:
                problems.append(f"exec {marker}: {exc}")
        with self._lock:
            for pod in list(self.job_pods.values()):
                try:
                    self._kill_job_process(pod)
                except Exception as exc:
                    problems.append(f"job pod {pod.name}: {exc}")
            for target in self.targets:
                for replica in target.replicas:
                    if replica.worker is not None:
                        replica.worker.join(60)
                    problems += self._destroy_replica(replica)
            for target in self.targets:
                with contextlib.suppress(Exception):
                    self.client.delete(SECRETS, target.namespace, target.secret,
                                       grace_period_seconds=0)
                for replica in target.replicas:
                    with contextlib.suppress(Exception):
                        self.client.delete(PODS, target.namespace, replica.name,
                                           grace_period_seconds=0)
            self.targets.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)
        if problems:
            raise RuntimeError("test kubelet stopped with problems: " + "; ".join(problems))

    def _destroy_replica(self, replica: _Replica) -> list[str]:
        problems = []
        for what, action in (("server", replica.server.destroy),
                             ("iptables", lambda: self._remove_chains(replica)),
                             ("netns", replica.netns.delete),
                             ("cgroups", replica.cgroups.remove)):
            try:
                action()
            except Exception as exc:
                problems.append(f"{replica.name} {what}: {exc}")
        return problems

    def leftovers(self) -> dict[str, list[str]]:
        """What of ours the machine still holds (tests/leftovers.py, filtered to our names)."""
        import leftovers

        found = leftovers.everything()
        mine: dict[str, list[str]] = {}
        for kind, items in found.items():
            if kind == "iptables":
                hits = [item for item in items if "PGGIT-KUBELET" in item]
            else:
                hits = [item for item in items if any(name in item for name in self.made)]
            mine[kind] = hits
        mine["processes"] = self._marked_processes()
        return {kind: items for kind, items in mine.items() if items}

    def _marked_processes(self) -> list[str]:
        needles = {f"{_MARKER}={uid}".encode() for uid in [*self.job_pods, *self.exec_processes]}
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                env = set((entry / "environ").read_bytes().split(b"\0"))
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if env & needles and state != "Z":
                found.append(entry.name)
        return found

    # -- targets -------------------------------------------------------------------------------
    def add_targets(self, namespace: str, name: str = "pg", replicas: int = 1, *,
                    labels: Mapping[str, str] | None = None, variant: str | None = None,
                    resources: Mapping[str, Any] | None = None,
                    secret: str | None = "pggit-db", secret_key: str = "dsn",
                    settings: Mapping[str, object] | None = None,
                    timeout: float = 120.0) -> TargetSet:
        """Start ``replicas`` servers and create their pods (Running, Ready) and the Secret.

        ``variant`` names a broken pgGit from ``tests/pggit_variants`` applied on top of the
        sound core; ``settings`` are PostgreSQL settings; ``secret=None`` makes no Secret.
        """
        target = TargetSet(namespace, name, dict(labels or DEFAULT_TARGET_LABELS),
                           copy.deepcopy(dict(resources or DEFAULT_TARGET_RESOURCES)), variant,
                           secret or "", secret_key)
        with self._lock:
            self.targets.append(target)
        for ordinal in range(replicas):
            # Random first: the veth names keep only the first 8 characters (IFNAMSIZ).
            ident = f"k{uuid.uuid4().hex[:7]}{self.token}"
            with subnet_lock():  # as a local run does: no two pick the same subnet
                netns = Netns.plan(ident)
                cgroups = PodCgroups(ident)
                server = _PodPostgres(procs_files=cgroups.procs_files(), host=netns.ns_address,
                                      port=POSTGRES_PORT, netns=netns.name,
                                      settings=dict(settings or {}), start_timeout=timeout)
                replica = _Replica(target, ordinal, f"{name}-{ordinal}", netns, cgroups, server,
                                   labels=dict(target.labels))
                self.made += [netns.name, f"{CGROUP_PREFIX}{ident}"]
                with self._lock:
                    target.replicas.append(replica)
                netns.create()
            self._setup_chains(replica)
            cgroups.create()
            cgroups.apply(target.resources)
            replica.actuated = copy.deepcopy(target.resources)
            server.init()
            self.made.append(str(server.base))
            server.start()
            from pggit_chaos.pggit import install

            install(server.socket_dsn("postgres"))
            if variant:
                from pggit_variants import apply_variant

                apply_variant(server.socket_dsn("postgres"), variant)
            with self._lock:
                self._create_target_pod(replica)
                replica.started_at = now_rfc3339()
                replica.state = "running"
                self._patch_target_status(replica)
        if secret:
            body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                    "metadata": {"name": secret, "namespace": namespace,
                                 "labels": {"app.kubernetes.io/part-of": name}},
                    "data": {secret_key: base64.b64encode(target.dsn.encode()).decode()}}
            try:
                self.client.create(SECRETS, namespace, body)
            except ApiError as exc:
                if not exc.conflict:
                    raise
                self.client.patch(SECRETS, namespace, secret, {"data": body["data"]})
        return target

    def replica(self, namespace: str, pod: str) -> _Replica:
        for target in self.targets:
            for replica in target.replicas:
                if replica.namespace == namespace and replica.name == pod:
                    return replica
        raise KeyError(f"no target pod {namespace}/{pod}")

    def server(self, namespace: str, pod: str) -> EmbeddedPostgres:
        return self.replica(namespace, pod).server

    def cgroups(self, namespace: str, pod: str) -> PodCgroups:
        return self.replica(namespace, pod).cgroups

    def process_states(self, namespace: str, pod: str) -> dict[int, str]:
        """pid -> state letter (``R``, ``S``, ``T`` stopped, ...) of the target pod's server
        processes: the postmaster and its children; ``{}`` while the server is down."""
        server = self.replica(namespace, pod).server
        postmaster = server.pid
        if postmaster is None or not server.running:
            return {}
        states: dict[int, str] = {}
        for pid in [postmaster, *child_pids(postmaster)]:
            with contextlib.suppress(OSError, IndexError):
                states[pid] = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return states

    def chain_rules(self, namespace: str, pod: str) -> list[str]:
        """``iptables -S`` of our two chains in the pod's namespace."""
        netns = self.replica(namespace, pod).netns.name
        lines = []
        for chain in (CHAIN_IN, CHAIN_OUT):
            lines += _iptables(netns, "-S", chain).stdout.splitlines()
        return [line for line in lines if not line.startswith("-N")]

    def _target_pod_body(self, replica: _Replica) -> dict[str, Any]:
        target = replica.target
        return {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": replica.name, "namespace": target.namespace,
                "labels": {**target.labels,
                           "statefulset.kubernetes.io/pod-name": replica.name,
                           "apps.kubernetes.io/pod-index": str(replica.ordinal)},
            },
            "spec": {
                "containers": [{
                    "name": "postgres", "image": "postgres:15",
                    "ports": [{"name": "postgres", "containerPort": POSTGRES_PORT,
                               "protocol": "TCP"}],
                    "resources": copy.deepcopy(target.resources),
                    "resizePolicy": [{"resourceName": "cpu", "restartPolicy": "NotRequired"},
                                     {"resourceName": "memory", "restartPolicy": "NotRequired"}],
                }],
                "hostname": replica.name, "nodeName": NODE_NAME, "restartPolicy": "Always",
                "terminationGracePeriodSeconds": 30, "serviceAccountName": "default",
            },
        }

    def _create_target_pod(self, replica: _Replica) -> dict[str, Any]:
        created = self.client.create(PODS, replica.namespace, self._target_pod_body(replica))
        replica.uid = _uid(created)
        replica.labels = dict(_meta(created).get("labels") or {})
        replica.restart_count = 0
        replica.last_state = {}
        replica.resize_condition = None
        return created

    def _target_status(self, replica: _Replica) -> dict[str, Any]:
        running = replica.state == "running"
        resources = replica.actuated if replica.actuated is not None else replica.target.resources
        container: dict[str, Any] = {
            "name": "postgres", "image": "postgres:15", "imageID": "postgres:15",
            "ready": running, "started": running, "restartCount": replica.restart_count,
            "lastState": replica.last_state,
            "resources": copy.deepcopy(resources),
            "allocatedResources": copy.deepcopy((resources or {}).get("requests") or {}),
        }
        if running:
            container["state"] = {"running": {"startedAt": replica.started_at}}
            container["containerID"] = f"pggit-kubelet://{replica.server.pid}"
        elif replica.start_error:
            container["state"] = {"waiting": {"reason": "CrashLoopBackOff",
                                              "message": replica.start_error[-1000:]}}
        else:
            container["state"] = {"waiting": {"reason": "ContainerCreating"}}
        conditions = _pod_conditions(running, started=running)
        if replica.resize_condition is not None:
            conditions.append(replica.resize_condition)
        status: dict[str, Any] = {
            "phase": "Running" if running else "Pending",
            "conditions": conditions,
            "hostIP": NODE_IP, "hostIPs": [{"ip": NODE_IP}],
            "podIP": replica.ip, "podIPs": [{"ip": replica.ip}],
            "qosClass": qos_class(resources),
            "startTime": replica.started_at or now_rfc3339(),
            "containerStatuses": [container],
        }
        return status

    def _patch_target_status(self, replica: _Replica) -> None:
        self._patch_status(PODS, replica.namespace, replica.name, self._target_status(replica))

    def _patch_status(self, api: Api, namespace: str, name: str, status: dict[str, Any]) -> None:
        try:
            self.client.patch(api, namespace, name, {"status": status}, subresource="status")
        except ApiError as exc:
            if not exc.not_found:
                raise

    # -- pods/exec -----------------------------------------------------------------------------
    def exec_in_pod(self, namespace: str, pod: str, container: str, command: Sequence[str],
                    stdin: bool = False) -> subprocess.Popen[bytes]:
        """Start ``command`` inside a target pod's container, as a kubelet's exec does.

        The process joins the pod's cgroups (so ``/proc/self/cgroup`` is the server's) and its
        network namespace, runs as root (the ``postgres`` image's user) with a container's
        environment, cwd ``/``. It sees the host's PID namespace: find the pod's processes
        by their cgroup, as :mod:`pggit_chaos.kube.faults` does. ``LookupError`` when no
        running container of that name is here; ``FileNotFoundError`` for a missing command.
        Called by the API server (:meth:`cluster.emulator.KubeEmulator.attach_node`).
        """
        # Not under the loop's lock: an exec must not wait for (or starve behind) the ticks.
        replica = self.replica(namespace, pod)  # KeyError: not a target pod of ours
        if container != "postgres":
            raise LookupError(f"pod {namespace}/{pod} has no container {container}")
        if replica.state != "running" or not replica.server.running:
            raise LookupError(f"container {container} of {namespace}/{pod} is not running")
        path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        if not command or shutil.which(command[0], path=path) is None:
            raise FileNotFoundError(f"{command[0] if command else ''}: executable file not "
                                    "found in $PATH")
        marker = f"exec-{uuid.uuid4().hex[:12]}"
        join = ('while [ "$1" != -- ]; do echo $$ > "$1" || exit 1; shift; done; shift; '
                'exec "$@"')
        argv = ["sh", "-c", join, "sh", *map(str, replica.cgroups.procs_files()), "--",
                "ip", "netns", "exec", replica.netns.name, *command]
        env = {"PATH": path, "HOSTNAME": pod, "HOME": "/root", "LANG": "C.UTF-8",
               _MARKER: marker}
        process = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin else None,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   cwd="/", env=env, start_new_session=True)
        self.exec_processes[marker] = process
        threading.Thread(target=self._reap_exec, args=(marker, process),
                         name=f"exec-{pod}", daemon=True).start()
        return process

    def _reap_exec(self, marker: str, process: subprocess.Popen[bytes]) -> None:
        """Forget an exec process once it ended (the API server reads its pipes and code)."""
        process.wait()
        if self.exec_processes.get(marker) is process:
            self.exec_processes.pop(marker, None)

    def _kill_exec(self, marker: str, process: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
        _reap(_kill_marked(marker))

    # -- iptables ------------------------------------------------------------------------------
    def _setup_chains(self, replica: _Replica) -> None:
        netns = replica.netns.name
        for chain, hook in ((CHAIN_IN, "INPUT"), (CHAIN_OUT, "OUTPUT")):
            _iptables(netns, "-N", chain)
            _iptables(netns, "-I", hook, "1", "-j", chain)

    def _remove_chains(self, replica: _Replica) -> None:
        from pggit_chaos.local.netns import netns_exists

        netns = replica.netns.name
        if not netns_exists(netns):
            return
        for chain, hook in ((CHAIN_IN, "INPUT"), (CHAIN_OUT, "OUTPUT")):
            while _iptables(netns, "-C", hook, "-j", chain, check=False).returncode == 0:
                _iptables(netns, "-D", hook, "-j", chain)
            if _iptables(netns, "-S", chain, check=False).returncode == 0:
                _iptables(netns, "-F", chain)
                _iptables(netns, "-X", chain)

    def _apply_rules(self, replica: _Replica,
                     wanted: tuple[list[list[str]], list[list[str]]]) -> None:
        if wanted == replica.rules:
            return
        netns = replica.netns.name
        for chain, old, new in ((CHAIN_IN, replica.rules[0], wanted[0]),
                                (CHAIN_OUT, replica.rules[1], wanted[1])):
            if old == new:
                continue
            _iptables(netns, "-F", chain)
            for rule in new:
                _iptables(netns, "-A", chain, *rule)
        replica.rules = wanted

    # -- the loop -------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                with self._lock:
                    self._tick()
            except Exception:
                text = traceback.format_exc()
                if not self.errors or self.errors[-1] != text:
                    self.errors.append(text)
            self._ticks += 1
            self._stop.wait(max(0.0, self.poll_interval - (time.monotonic() - started)))

    def _tick(self) -> None:
        pods = self.client.list(PODS)
        jobs = self.client.list(JOBS)
        by_key = {_key(pod): pod for pod in pods}
        by_uid = {_uid(pod): pod for pod in pods}
        self._targets_tick(by_key, pods)
        self._jobs_tick(jobs)
        self._job_pods_tick(by_uid)

    # -- target pods -----------------------------------------------------------------------------
    def _targets_tick(self, by_key: Mapping[tuple[str, str], dict[str, Any]],
                      pods: Sequence[dict[str, Any]]) -> None:
        replicas = [r for t in self.targets for r in t.replicas if r.state != "creating"]
        if not replicas:
            return
        policies = self.client.list(NETWORK_POLICIES)
        if any(_has_namespace_selector(p) for p in policies) and (
                self._ticks % 20 == 0 or not self._namespace_labels):
            self._namespace_labels = {
                _key(ns)[1]: dict(_meta(ns).get("labels") or {})
                for ns in self.client.list(NAMESPACES)}
        for replica in replicas:
            pod = by_key.get((replica.namespace, replica.name))
            if replica.state in ("running", "starting") and (
                    pod is None or _uid(pod) != replica.uid
                    or _meta(pod).get("deletionTimestamp")):
                self._target_deleted(replica, pod)
                continue
            if replica.state == "down":
                if time.monotonic() < replica.recreate_at:
                    continue
                if pod is not None:  # the old object is still on its way out
                    if _meta(pod).get("deletionTimestamp"):
                        self.client.delete(PODS, replica.namespace, replica.name,
                                           grace_period_seconds=0)
                    continue
                self._recreate_target(replica)
                continue
            if replica.state == "starting":
                if replica.worker is not None and not replica.worker.is_alive():
                    replica.worker = None
                    if replica.start_error is None:
                        replica.state = "running"
                        replica.started_at = now_rfc3339()
                    else:
                        self._start_replica_server(replica)  # try again (CrashLoopBackOff)
                    self._patch_target_status(replica)
                continue
            assert pod is not None
            replica.labels = dict(_meta(pod).get("labels") or {})
            if not replica.server.running:  # the server died on its own: restart the container
                code = replica.server.process.returncode if replica.server.process else -9
                replica.server.kill()
                replica.restart_count += 1
                replica.last_state = {"terminated": {
                    "exitCode": 128 - code if code < 0 else code,
                    "reason": "Error", "startedAt": replica.started_at,
                    "finishedAt": now_rfc3339()}}
                self._start_replica_server(replica)
                self._patch_target_status(replica)
                continue
            self._resize(replica, pod)
            self._apply_rules(replica, policy_rules(
                policies, pod, pods, self._namespace_labels,
                cut_established=self.cut_established))

    def _target_deleted(self, replica: _Replica, pod: dict[str, Any] | None) -> None:
        """The pod is being deleted: SIGKILL the server (a crash), remove the pod, recreate."""
        if replica.worker is not None:
            replica.worker.join(120)
            replica.worker = None
        replica.server.kill()
        self._apply_rules(replica, ([], []))
        if pod is not None and _uid(pod) == replica.uid:
            self.client.delete(PODS, replica.namespace, replica.name, grace_period_seconds=0)
        replica.state = "down"
        replica.uid = None
        replica.recreate_at = time.monotonic() + self.restart_delay

    def _recreate_target(self, replica: _Replica) -> None:
        created = self._create_target_pod(replica)
        replica.actuated = copy.deepcopy(
            ((created.get("spec") or {}).get("containers") or [{}])[0].get("resources") or {})
        with contextlib.suppress(OSError, ValueError):
            replica.cgroups.apply(replica.actuated)
        replica.started_at = ""
        self._start_replica_server(replica)
        self._patch_target_status(replica)

    def _start_replica_server(self, replica: _Replica) -> None:
        replica.state = "starting"
        replica.start_error = None

        def start() -> None:
            try:
                replica.server.start()
            except Exception as exc:
                replica.start_error = str(exc)
                with contextlib.suppress(Exception):
                    replica.server.kill()
                time.sleep(1.0)

        replica.worker = threading.Thread(target=start, name=f"start-{replica.name}",
                                          daemon=True)
        replica.worker.start()

    def _resize(self, replica: _Replica, pod: dict[str, Any]) -> None:
        containers = (pod.get("spec") or {}).get("containers") or [{}]
        wanted = containers[0].get("resources") or {}
        if _normal_resources(wanted) == _normal_resources(replica.actuated):
            if replica.resize_condition is not None:
                replica.resize_condition = None
                self._patch_target_status(replica)
            return
        problem = _infeasible(wanted)
        if problem:
            condition = _condition("PodResizePending", "True", "Infeasible", problem, probe=True)
            if (replica.resize_condition or {}).get("message") != problem:
                replica.resize_condition = condition
                self._patch_target_status(replica)
            return
        replica.resize_condition = _condition("PodResizeInProgress", "True", probe=True)
        self._patch_target_status(replica)
        try:
            replica.cgroups.apply(wanted)
        except (OSError, ValueError) as exc:
            message = f"resize of container postgres failed: {exc}"
            replica.resize_condition = _condition("PodResizeInProgress", "True", "Error", message,
                                                  probe=True)
            with contextlib.suppress(OSError, ValueError):
                replica.cgroups.apply(replica.actuated)  # keep what was actuated
            self._patch_target_status(replica)
            return
        replica.actuated = copy.deepcopy(wanted)
        replica.resize_condition = None
        self._patch_target_status(replica)

    # -- jobs ---------------------------------------------------------------------------------
    def _jobs_tick(self, jobs: Sequence[dict[str, Any]]) -> None:
        present = {_uid(job) for job in jobs}
        for uid, job in list(self.jobs.items()):
            if uid not in present and not job.deleted:  # deleted: GC its pods
                job.deleted = True
                for pod in job.pods:
                    if pod.state != "done":
                        self._terminate(pod, pod.grace, delete=True)
            if job.deleted and all(pod.state == "done" for pod in job.pods):
                del self.jobs[uid]
        for body in jobs:
            uid = _uid(body)
            found = self.jobs.get(uid)
            if found is not None:
                job = found
            else:
                if _terminal(body):
                    continue
                namespace, name = _key(body)
                job = _Job(namespace, name, uid, body,
                           (body.get("status") or {}).get("startTime") or now_rfc3339(),
                           time.monotonic())
                self.jobs[uid] = job
            job.body = body
            if job.finished:
                continue
            self._job_step(job)

    def _job_step(self, job: _Job) -> None:
        spec = job.body.get("spec") or {}
        if spec.get("suspend"):
            return
        active = [pod for pod in job.pods if pod.state != "done"]
        deadline = spec.get("activeDeadlineSeconds")
        if (deadline is not None and job.failure_target is None
                and time.monotonic() - job.start_mono > float(deadline)):
            job.failure_target = ("DeadlineExceeded", MSG_DEADLINE)
            job.conditions.append(_condition("FailureTarget", "True", "DeadlineExceeded",
                                             MSG_DEADLINE, probe=True))
            for pod in active:
                self._terminate(pod, pod.grace, delete=True)
        if not active and job.failure_target is None:
            backoff = int(spec.get("backoffLimit", 6))
            if job.succeeded >= 1:
                job.conditions += [
                    _condition("SuccessCriteriaMet", "True", "CompletionsReached", MSG_COMPLETE,
                               probe=True),
                    _condition("Complete", "True", "CompletionsReached", MSG_COMPLETE,
                               probe=True)]
                job.completion_time = now_rfc3339()
                job.finished = True
            elif job.failed > backoff:
                job.failure_target = ("BackoffLimitExceeded", MSG_BACKOFF)
                job.conditions.append(_condition("FailureTarget", "True", "BackoffLimitExceeded",
                                                 MSG_BACKOFF, probe=True))
            else:
                self._create_job_pod(job)
        active = [pod for pod in job.pods if pod.state != "done"]
        if job.failure_target is not None and not active and not job.finished:
            reason, message = job.failure_target
            job.conditions.append(_condition("Failed", "True", reason, message, probe=True))
            job.finished = True
        self._patch_job_status(job)

    def _patch_job_status(self, job: _Job) -> None:
        active = [pod for pod in job.pods if pod.state != "done"]
        status: dict[str, Any] = {
            "startTime": job.start_time,
            "active": len([p for p in active if p.kill_at is None]),
            "ready": len([p for p in active if p.state == "running" and p.kill_at is None]),
            "terminating": len([p for p in active if p.kill_at is not None]),
            "succeeded": job.succeeded, "failed": job.failed,
            "uncountedTerminatedPods": {},
            "conditions": job.conditions or None,
        }
        if job.completion_time:
            status["completionTime"] = job.completion_time
        if status == job.last_status or job.deleted:
            return
        self._patch_status(JOBS, job.namespace, job.name, status)
        job.last_status = status

    def _create_job_pod(self, job: _Job) -> None:
        template = (job.body.get("spec") or {}).get("template") or {}
        template_meta = template.get("metadata") or {}
        base = f"{job.name}-"[:58]
        labels = {**(template_meta.get("labels") or {}),
                  "batch.kubernetes.io/controller-uid": job.uid,
                  "batch.kubernetes.io/job-name": job.name,
                  "controller-uid": job.uid, "job-name": job.name}
        spec = copy.deepcopy(template.get("spec") or {})
        spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
        spec["nodeName"] = NODE_NAME
        spec.setdefault("terminationGracePeriodSeconds", 30)
        body = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "generateName": base, "namespace": job.namespace, "labels": labels,
                "annotations": dict(template_meta.get("annotations") or {}),
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job.name,
                                     "uid": job.uid, "controller": True,
                                     "blockOwnerDeletion": True}],
            },
            "spec": spec,
        }
        try:
            created = self.client.create(PODS, job.namespace, body)
        except ApiError as exc:
            if exc.status not in (403, 422):
                raise
            # The Job controller: no pod, no condition; a FailedCreate Event on the Job (its
            # recorder aggregates repeats: posted once per message here), tried again later.
            self._failed_create(job, f"Error creating: {exc.api_message}")
            return
        uid, name = _uid(created), str(created["metadata"]["name"])
        folder = self.workdir / f"{job.namespace}_{name}"
        (folder / "home").mkdir(parents=True)
        (folder / "tmp").mkdir()
        pod = _JobPod(job.namespace, name, uid, job, created.get("spec") or spec,
                      _meta(created), folder)
        pod.termination_file.touch()
        job.pods.append(pod)
        self.job_pods[uid] = pod
        self._patch_job_pod_status(pod)

    def _failed_create(self, job: _Job, message: str) -> None:
        if message in job.failed_creates:
            return
        job.failed_creates.add(message)
        now = datetime.now(UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        self.client.create(EVENTS, job.namespace, {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{job.name}.{uuid.uuid4().hex[:16]}",
                         "namespace": job.namespace},
            "involvedObject": {"apiVersion": "batch/v1", "kind": "Job", "name": job.name,
                               "namespace": job.namespace, "uid": job.uid},
            "reason": "FailedCreate", "message": message, "type": "Warning",
            "source": {"component": "job-controller"}, "reportingComponent": "job-controller",
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1})

    # -- job pods --------------------------------------------------------------------------------
    def _job_pods_tick(self, by_uid: Mapping[str, dict[str, Any]]) -> None:
        for uid, pod in list(self.job_pods.items()):
            if pod.state == "done":
                continue
            body = by_uid.get(uid)
            pod.listed = pod.listed or body is not None
            if body is None and not pod.listed and time.monotonic() - pod.created_mono < 10:
                continue  # created after this tick's listing
            if body is None or _meta(body).get("deletionTimestamp"):
                pod.gone = body is None
                grace = _meta(body or {}).get("deletionGracePeriodSeconds")
                if pod.kill_at is None:
                    self._terminate(pod, pod.grace if grace is None else float(grace),
                                    delete=True)
            elif pod.job.deleted and pod.kill_at is None:
                self._terminate(pod, pod.grace, delete=True)
            if pod.state == "pending":
                if pod.kill_at is not None:
                    self._finish(pod, None)
                elif time.monotonic() >= pod.next_try:
                    self._start_job_process(pod)
            elif pod.state in ("running", "terminating"):
                assert pod.process is not None
                code = pod.process.poll()
                if code is not None:
                    self._finish(pod, code)
                elif pod.kill_at is not None and time.monotonic() >= pod.kill_at:
                    self._kill_job_process(pod)

    def _resolve_env(self, pod: _JobPod) -> dict[str, str]:
        """The container's environment as the kubelet makes it; _ConfigError if it cannot."""
        container = pod.container
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            prefix = str(source.get("prefix") or "")
            for key, api, kind in (("secretRef", SECRETS, "secret"),
                                   ("configMapRef", CONFIG_MAPS, "configmap")):
                ref = source.get(key)
                if ref is None:
                    continue
                data = self._read_data(api, pod.namespace, str(ref.get("name")))
                if data is None:
                    if ref.get("optional"):
                        continue
                    raise _ConfigError(f'{kind} "{ref.get("name")}" not found')
                env.update({prefix + k: v for k, v in data.items()})
        for item in container.get("env") or []:
            name = str(item.get("name"))
            if "valueFrom" not in item:
                env[name] = _expand(str(item.get("value") or ""), env)
                continue
            source = item["valueFrom"]
            value = self._env_from(pod, source)
            if value is not None:
                env[name] = value
        return env

    def _env_from(self, pod: _JobPod, source: Mapping[str, Any]) -> str | None:
        for key, api, kind, kind_title in (("secretKeyRef", SECRETS, "secret", "Secret"),
                                           ("configMapKeyRef", CONFIG_MAPS, "configmap",
                                            "ConfigMap")):
            ref = source.get(key)
            if ref is None:
                continue
            name, wanted = str(ref.get("name")), str(ref.get("key"))
            data = self._read_data(api, pod.namespace, name)
            if data is None:
                if ref.get("optional"):
                    return None
                raise _ConfigError(f'{kind} "{name}" not found')
            if wanted not in data:
                if ref.get("optional"):
                    return None
                raise _ConfigError(f"couldn't find key {wanted} in {kind_title} "
                                   f"{pod.namespace}/{name}")
            return data[wanted]
        field_ref = source.get("fieldRef")
        if field_ref is not None:
            path = str(field_ref.get("fieldPath"))
            values = {"metadata.name": pod.name, "metadata.namespace": pod.namespace,
                      "metadata.uid": pod.uid,
                      "spec.serviceAccountName": str(pod.spec.get("serviceAccountName") or ""),
                      "spec.nodeName": NODE_NAME, "status.hostIP": NODE_IP,
                      "status.podIP": NODE_IP}
            match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
            if match:
                return str((pod.meta.get(match.group(1)) or {}).get(match.group(2), ""))
            if path not in values:
                raise _ConfigError(f"unsupported fieldRef {path}")
            return values[path]
        raise _ConfigError(f"unsupported valueFrom {sorted(source)}")

    def _read_data(self, api: Api, namespace: str, name: str) -> dict[str, str] | None:
        body = self.client.find(api, namespace, name)
        if body is None:
            return None
        data: dict[str, str] = {}
        if api is SECRETS:
            for key, value in (body.get("data") or {}).items():
                data[key] = base64.b64decode(value).decode()
            data.update({k: str(v) for k, v in (body.get("stringData") or {}).items()})
        else:
            data.update({k: str(v) for k, v in (body.get("data") or {}).items()})
        return data

    def _argv(self, pod: _JobPod, env: Mapping[str, str]) -> list[str]:
        container = pod.container
        command = list(container.get("command") or ["pggit-chaos"])
        argv = [_expand(str(part), env) for part in [*command, *(container.get("args") or [])]]
        if argv[0] == "pggit-chaos":
            argv[0] = console_script()
        elif argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        return argv

    def _process_env(self, pod: _JobPod, env: Mapping[str, str]) -> dict[str, str]:
        account = str(pod.spec.get("serviceAccountName") or "default")
        identity = self.service_accounts.get(account, self.default_identity)
        if identity not in self.kubeconfigs:
            raise _ConfigError(f"no kubeconfig for identity {identity!r} "
                               f"(service account {account})")
        base = {
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOSTNAME": pod.name,
            "HOME": str(pod.folder / "home"), "TMPDIR": str(pod.folder / "tmp"),
        }
        # PYTHONPATH: the Job processes import the same pggit_chaos as the tests (a checkout
        # other than the installed one, e.g. a worktree, put first on the path).
        for name in ("PGGIT_CHAOS_PG_BINDIR", "PYTHONPATH"):
            if name in os.environ:
                base[name] = os.environ[name]
        # Like a projected token: the pod's own copy (the original may sit under a /tmp
        # that the pod's emptyDir hides).
        kubeconfig = pod.folder / "kubeconfig"
        shutil.copyfile(self.kubeconfigs[identity], kubeconfig)
        return {**base, **self.extra_env, **env,
                "KUBECONFIG": str(kubeconfig),
                "PGGIT_CHAOS_TERMINATION_MESSAGE_PATH": str(pod.termination_file),
                _MARKER: pod.uid}

    def _start_job_process(self, pod: _JobPod) -> None:
        try:
            env = self._resolve_env(pod)
            process_env = self._process_env(pod, env)
        except _ConfigError as exc:
            pod.next_try = time.monotonic() + 1.0
            if pod.config_error != str(exc):
                pod.config_error = str(exc)
                self._patch_job_pod_status(pod)
            return
        pod.config_error = None
        argv = self._argv(pod, env)
        if shutil.which(argv[0], path=process_env["PATH"]) is None:
            pod.state = "running"
            message = (f'exec: "{argv[0]}": executable file not found in $PATH')
            pod.log.write_text(message + "\n")
            self._finish(pod, 128, reason="StartError", message=message)
            return
        cwd = str(pod.container.get("workingDir") or pod.folder / "home")
        argv = self._with_volumes(pod, argv, cwd)
        pod.started_at = now_rfc3339()
        with open(pod.log, "ab") as log:
            try:
                pod.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, cwd=pod.folder,
                                               env=process_env, start_new_session=True)
            except OSError as exc:
                log.write(f"exec {argv[0]}: {exc}\n".encode())
                pod.state = "running"
                self._finish(pod, 128, reason="StartError", message=f"exec: {exc}")
                return
        pod.state = "running"
        self._patch_job_pod_status(pod)

    def _with_volumes(self, pod: _JobPod, argv: list[str], cwd: str) -> list[str]:
        """Run ``argv`` in ``cwd`` with the pod's emptyDir volumes mounted at their paths.

        Root: a private mount namespace (``unshare --mount``) in which a per-pod folder is
        bind-mounted over each emptyDir ``mountPath`` that exists on this machine (``/tmp`` of
        the Job builders): pods running at once do not share their scratch files, and nothing
        is written to the machine's own folders. Otherwise just ``cd``.
        """
        volumes = {str(v.get("name")) for v in pod.spec.get("volumes") or []
                   if "emptyDir" in v}
        binds: list[str] = []
        if os.geteuid() == 0 and shutil.which("unshare"):
            for mount in pod.container.get("volumeMounts") or []:
                target = str(mount.get("mountPath") or "")
                if str(mount.get("name")) not in volumes or not Path(target).is_dir():
                    continue
                if _hides_code(Path(target)):  # e.g. a checkout under /tmp: keep it visible
                    continue
                source = pod.folder / "volumes" / str(mount.get("name"))
                source.mkdir(parents=True, exist_ok=True)
                binds += [str(source), target]
        script = ('while [ "$1" != -- ]; do mount --bind "$1" "$2" || exit 1; shift 2; done; '
                  'shift; cd "$1" || exit 1; shift; exec "$@"')
        prefix = ["unshare", "--mount", "--propagation", "private"] if binds else []
        return [*prefix, "sh", "-c", script, "sh", *binds, "--", cwd, *argv]

    def _terminate(self, pod: _JobPod, grace: float, *, delete: bool) -> None:
        """SIGTERM the container's process now, SIGKILL after ``grace`` seconds."""
        pod.delete_after = pod.delete_after or delete
        if pod.kill_at is not None:
            return
        pod.kill_at = time.monotonic() + grace
        if pod.process is not None and pod.process.poll() is None:
            pod.state = "terminating"
            with contextlib.suppress(ProcessLookupError):
                pod.process.send_signal(signal.SIGTERM)

    def _kill_job_process(self, pod: _JobPod) -> None:
        """SIGKILL the container's process and everything it started."""
        victims: list[int] = []
        if pod.process is not None and pod.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pod.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                pod.process.wait(10)
        if pod.process is not None:
            victims += child_pids(pod.process.pid)
        victims += _kill_marked(pod.uid)
        _reap(victims)

    def _finish(self, pod: _JobPod, code: int | None, *, reason: str | None = None,
                message: str | None = None) -> None:
        """The container ended (or never started): status, the Job's counts, deletion."""
        self._kill_job_process(pod)  # whatever it left running dies with the container
        pod.state = "done"
        pod.finished_at = now_rfc3339()
        if code is not None:
            pod.exit_code = 128 - code if code < 0 else code
            pod.reason = reason or ("Completed" if pod.exit_code == 0 else "Error")
            pod.message = message if message is not None else self._termination_message(pod)
            if pod.exit_code == 0:
                pod.job.succeeded += 1
            else:
                pod.job.failed += 1
        elif not pod.job.deleted:  # deleted before it ran: counted as failed
            pod.job.failed += 1
        if not pod.gone:
            self._patch_job_pod_status(pod)
            if pod.delete_after:
                self.client.delete(PODS, pod.namespace, pod.name, grace_period_seconds=0)
        if not pod.job.deleted and not pod.job.finished:
            self._job_step(pod.job)

    def _termination_message(self, pod: _JobPod) -> str:
        try:
            data = pod.termination_file.read_bytes()[:MESSAGE_MAX]
        except OSError:
            data = b""
        text = data.decode("utf-8", "replace")
        policy = pod.container.get("terminationMessagePolicy") or "File"
        if not text and pod.exit_code != 0 and policy == "FallbackToLogsOnError":
            lines = self.logs(pod.namespace, pod.name).splitlines()[-FALLBACK_LINES:]
            tail = "\n".join(lines).encode()[-FALLBACK_BYTES:]
            text = tail.decode("utf-8", "replace")
        return text

    def _job_pod_status(self, pod: _JobPod) -> dict[str, Any]:
        container: dict[str, Any] = {
            "name": pod.container.get("name", "main"), "image": pod.container.get("image", ""),
            "imageID": pod.container.get("image", ""), "restartCount": 0, "lastState": {},
            "ready": pod.state == "running", "started": pod.state in ("running", "terminating"),
        }
        if pod.process is not None:
            container["containerID"] = f"pggit-kubelet://{pod.process.pid}"
        phase = "Pending"
        conditions = _pod_conditions(False, started=pod.state != "pending")
        if pod.state == "pending":
            waiting: dict[str, Any] = {"reason": "ContainerCreating"}
            if pod.config_error:
                waiting = {"reason": "CreateContainerConfigError", "message": pod.config_error}
            container["state"] = {"waiting": waiting}
        elif pod.state in ("running", "terminating"):
            phase = "Running"
            container["state"] = {"running": {"startedAt": pod.started_at}}
            conditions = _pod_conditions(pod.state == "running")
        else:
            terminated: dict[str, Any] = {
                "exitCode": pod.exit_code if pod.exit_code is not None else 137,
                "reason": pod.reason or "ContainerStatusUnknown",
                "startedAt": pod.started_at or None, "finishedAt": pod.finished_at}
            if pod.message:
                terminated["message"] = pod.message
            container["state"] = {"terminated": terminated}
            phase = "Succeeded" if pod.exit_code == 0 else "Failed"
            conditions = _pod_conditions(False, reason="PodCompleted")
        return {"phase": phase, "conditions": conditions, "hostIP": NODE_IP,
                "hostIPs": [{"ip": NODE_IP}], "podIP": NODE_IP, "podIPs": [{"ip": NODE_IP}],
                "qosClass": qos_class(pod.container.get("resources")),
                "startTime": pod.meta.get("creationTimestamp") or now_rfc3339(),
                "containerStatuses": [container]}

    def _patch_job_pod_status(self, pod: _JobPod) -> None:
        status = self._job_pod_status(pod)
        if status != pod.last_status:
            self._patch_status(PODS, pod.namespace, pod.name, status)
            pod.last_status = status

    # -- for the tests -----------------------------------------------------------------------------
    def logs(self, namespace: str, pod: str) -> str:
        """A Job pod's stdout+stderr (the newest pod of that name), or a target's server log."""
        for candidate in reversed(list(self.job_pods.values())):
            if candidate.namespace == namespace and candidate.name == pod:
                try:
                    return candidate.log.read_text(errors="replace")
                except OSError:
                    return ""
        with contextlib.suppress(KeyError, OSError, AssertionError):
            return self.replica(namespace, pod).server.log_file.read_text(errors="replace")
        return ""

    def all_logs(self) -> str:
        """Every Job pod's log and every loop error: for a failing test's message."""
        parts = [f"--- {pod.namespace}/{pod.name} (exit {pod.exit_code}) ---\n"
                 f"{self.logs(pod.namespace, pod.name)}" for pod in self.job_pods.values()]
        parts += [f"--- kubelet error ---\n{error}" for error in self.errors]
        return "\n".join(parts)

    def kill_pod_process(self, namespace: str, pod: str) -> None:
        """SIGKILL a Job pod's process (a runner pod killed mid-fault): the pod ends Failed."""
        with self._lock:
            for candidate in self.job_pods.values():
                if (candidate.namespace, candidate.name) == (namespace, pod) \
                        and candidate.process is not None and candidate.state != "done":
                    with contextlib.suppress(ProcessLookupError):
                        candidate.process.send_signal(signal.SIGKILL)
                    return
        raise KeyError(f"no running Job pod {namespace}/{pod}")

    def job_pod_names(self, namespace: str, job: str) -> list[str]:
        return [pod.name for pod in self.job_pods.values()
                if pod.namespace == namespace and pod.job.name == job]

    def wait_pod(self, namespace: str, name: str, *, ready: bool = True,
                 not_uid: str | None = None, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until the pod exists (with a uid other than ``not_uid``) and is Ready."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            last = self.client.find(PODS, namespace, name)
            if last is not None and _uid(last) != not_uid:
                conditions = (last.get("status") or {}).get("conditions") or []
                is_ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                               for c in conditions)
                if is_ready or not ready:
                    return last
            time.sleep(0.05)
        raise AssertionError(f"pod {namespace}/{name} not ready after {timeout:g}s: {last}\n"
                             f"{self.all_logs()}")

    def wait_job(self, namespace: str, name: str, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until the Job has a Complete or Failed condition; returns the Job."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            last = self.client.find(JOBS, namespace, name)
            if last is not None and _terminal(last):
                return last
            time.sleep(0.05)
        raise AssertionError(f"job {namespace}/{name} not finished after {timeout:g}s: {last}\n"
                             f"{self.all_logs()}")


def _workdir_parent() -> str:
    for candidate in ("/var/tmp", tempfile.gettempdir()):
        if os.access(candidate, os.W_OK):
            return candidate
    return tempfile.gettempdir()


def _terminal(job: Mapping[str, Any]) -> bool:
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


def _has_namespace_selector(policy: Mapping[str, Any]) -> bool:
    spec = policy.get("spec") or {}
    return any(peer.get("namespaceSelector") is not None
               for key, peer_key in (("ingress", "from"), ("egress", "to"))
               for rule in spec.get(key) or [] for peer in rule.get(peer_key) or [])


def _node_memory() -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 1 << 62


def _infeasible(resources: Mapping[str, Any]) -> str | None:
    """The kubelet's Infeasible message when the node could never hold the requests."""
    cpu_request, _, mem_request, _ = _normal_resources(resources)
    capacity_cpu = (os.cpu_count() or 1) * 1000
    if cpu_request is not None and cpu_request > capacity_cpu:
        return (f"Node didn't have enough capacity: cpu, requested: {cpu_request}, "
                f"capacity: {capacity_cpu}")
    capacity_memory = _node_memory()
    if mem_request is not None and mem_request > capacity_memory:
        return (f"Node didn't have enough capacity: memory, requested: {mem_request}, "
                f"capacity: {capacity_memory}")
    return None


# ------------------------------------------------------------------------- fixtures
def kubelet_fixture(kubeconfigs: Mapping[str, str | os.PathLike[str]],
                    **kwargs: Any) -> Iterator[Kubelet]:
    """Body of a ``kubelet`` fixture: a started kubelet; on teardown stopped, and nothing of
    its own left on the machine (asserted) nor any error its loop met (asserted)."""
    kubelet = Kubelet(kubeconfigs, **kwargs)
    try:
        yield kubelet.start()
    finally:
        kubelet.stop()
    left = kubelet.leftovers()
    assert not left, f"the test kubelet left behind: {left}"
    assert not kubelet.errors, "the test kubelet's loop failed:\n" + "\n".join(kubelet.errors)


def target_set_fixture(kubelet: Kubelet, namespace: str = "default",
                       **kwargs: Any) -> Iterator[TargetSet]:
    """Body of a ``targets`` fixture: ``pg-0`` Running with sound pgGit and the Secret."""
    yield kubelet.add_targets(namespace, **kwargs)


def connect(dsn: str, timeout: float = 5.0) -> psycopg.Connection[Any]:
    """A connection to a target (autocommit, short connect timeout)."""
    return psycopg.connect(dsn, autocommit=True, connect_timeout=max(1, int(timeout)))
