"""scripts/real-node's promise about the host: `down` removes exactly what `up` added (processes,
cgroup roots, the bridge, mounts, iptables chains and rules, ipsets, state), also after `up` was
SIGKILLed half-way, and is safe to run twice.

The SIGKILL test starts a real node (binaries and images from the cache scripts/real-node keeps;
.ci/run runs it after `scripts/real-node e2e` has filled that cache), so it is marked `realnode`
and skipped unless PGGIT_CHAOS_REAL_NODE_TESTS=1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "real-node"

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="scripts/real-node runs as root")


def real_node(*args: str, state: Path | None = None,
              timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if state is not None:
        env["PGGIT_CHAOS_REAL_NODE_STATE"] = str(state)
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, timeout=timeout, check=False)


def host_snapshot(state: Path) -> dict[str, object]:
    """What a node could leave on the host: iptables rules, ipsets, links, our cgroup roots,
    mounts under the state folder, processes started from it."""
    tables = {}
    for binary in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle", "raw"):
            done = subprocess.run([binary, "-w", "-t", table, "-S"], capture_output=True,
                                  text=True, check=False)
            tables[f"{binary} {table}"] = sorted(done.stdout.splitlines())
    ipsets = subprocess.run(["ipset", "list", "-n"], capture_output=True, text=True,
                            check=False).stdout.split()
    # The node's bridge and the CNI's veths (other tests' links come and go beside it).
    links = sorted(name for name in (line.split(":")[1].strip().split("@")[0] for line in
                                     subprocess.run(["ip", "-o", "link"], capture_output=True,
                                                    text=True, check=True).stdout.splitlines())
                   if name == "pgcnode0" or name.startswith("veth"))
    cgroups = sorted(str(p) for p in Path("/sys/fs/cgroup").glob("*/pgc-real-node"))
    mounts = sorted(line.split()[4] for line in Path("/proc/self/mountinfo").read_text()
                    .splitlines() if line.split()[4].startswith(str(state)))
    processes = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if str(state).encode() in cmdline:
                processes.append(cmdline.replace(b"\0", b" ").decode(errors="replace")[:120])
    return {"iptables": tables, "ipsets": sorted(ipsets), "links": links, "cgroups": cgroups,
            "mounts": mounts, "processes": sorted(processes)}


@root_only
def test_down_without_a_node_is_a_no_op_and_safe_twice(tmp_path: Path) -> None:
    state = tmp_path / "state"
    for _ in range(2):
        done = real_node("down", state=state)
        assert done.returncode == 0, done.stderr
        assert "nothing to take down" in done.stdout
    assert not state.exists()


@root_only
def test_bad_usage_exits_2() -> None:
    done = real_node("sideways")
    assert done.returncode == 2
    assert "invalid choice: 'sideways'" in done.stderr


@pytest.mark.realnode
@root_only
@pytest.mark.skipif(os.environ.get("PGGIT_CHAOS_REAL_NODE_TESTS") != "1",
                    reason="starts a real node: PGGIT_CHAOS_REAL_NODE_TESTS=1 (.ci/run sets it "
                           "after scripts/real-node e2e)")
def test_down_cleans_up_after_a_sigkilled_up(tmp_path: Path) -> None:
    state = tmp_path / "state"
    before = host_snapshot(state)
    env = dict(os.environ, PGGIT_CHAOS_REAL_NODE_STATE=str(state))
    up = subprocess.Popen([sys.executable, str(SCRIPT), "up"], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        # Killed once the kubelet was started: the control plane, containerd, the kubelet,
        # the bridge, the cgroup roots, the tmpfs volumes and the first iptables chains exist.
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and up.poll() is None:
            ledger = state / "ledger"
            if ledger.exists() and "\tkubelet" in ledger.read_text():
                break
            time.sleep(0.2)
        assert up.poll() is None, up.stdout.read() if up.stdout else ""
        time.sleep(3)
        up.send_signal(signal.SIGKILL)
        up.wait(timeout=30)
        during = host_snapshot(state)
        assert during["processes"], "nothing of the node was running when up was killed"
        assert during["cgroups"] and during["mounts"]
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        first = real_node("down", state=state)
        second = real_node("down", state=state)
    assert first.returncode == 0, first.stdout + first.stderr
    assert second.returncode == 0 and "nothing to take down" in second.stdout
    after = host_snapshot(state)
    assert after == before


def test_the_crd_check_reads_every_document_kubectl_prints() -> None:
    """`pggit-chaos crd` prints two CRDs; `kubectl create --dry-run=client -o json` prints one
    JSON document after the other, which json.loads refused ("Extra data"): `install` failed
    once the schedule's CRD was added."""
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.SourceFileLoader("real_node_script", str(SCRIPT))
    spec = importlib.util.spec_from_loader("real_node_script", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    text = ('{"kind": "CustomResourceDefinition", "metadata": {"name": "a"}}\n'
            '{"kind": "List", "items": [{"metadata": {"name": "b"}}, '
            '{"metadata": {"name": "c"}}]}\n')
    assert [d["metadata"]["name"] for d in module.json_documents(text)] == ["a", "b", "c"]
    assert module.json_documents("  \n") == []
