"""disk-pressure in the cluster form: the balloon written into the pod's data volume via pods/exec.

The test kubelet's target pod is a real PostgreSQL whose data folder is the pod's "data
volume"; here that folder sits on a 256 MiB tmpfs this test mounts (a size-limited volume, as a
PersistentVolume is), so that filling it to ENOSPC is quick and touches nothing else. The real
operator runs experiment 11 through its runner Job; the exec'd POSIX script sizes the balloon
from ``df -P`` in the container and writes it with ``cat``/``dd``. What is asserted is read from
the machine (``statvfs`` of the mount while the fault is held, the balloon file on disk) and
from the experiment's status (PostgreSQL's own error in the evidence, the verdict).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.emulator import KubeEmulator, runner_namespace
from cluster.kubelet import Kubelet, connect
from cluster.test_experiments import (
    TARGET_LABELS,
    explain,
    journal_of,
    judged_in_cluster,
    manifest,
    wait_injected,
    wait_terminal,
)
from cluster.test_operator import start_operator  # noqa: F401  (the fixture)
from pggit_chaos.kube import names
from pggit_chaos.kube.client import EXPERIMENTS, JOBS, KubeClient
from pggit_chaos.spec.expect import Result

pytestmark = [
    pytest.mark.kube,
    pytest.mark.faults,
    pytest.mark.skipif(os.geteuid() != 0, reason="the test volume is a tmpfs mount: root"),
]

VOLUME_MI = 256


@pytest.fixture
def volume() -> Iterator[Path]:
    """A 256 MiB tmpfs standing in for the pod's PersistentVolume."""
    path = Path(tempfile.mkdtemp(prefix="pggit-chaos-test-volume-", dir="/tmp"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={VOLUME_MI}m,mode=0755",
                    "pggit-chaos-test-volume", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)
        if subprocess.run(["mountpoint", "-q", str(path)], check=False).returncode == 0:
            subprocess.run(["umount", "-l", str(path)], check=False)
        path.rmdir()


@pytest.fixture
def kubelet(admin_client: KubeClient, kubeconfigs: dict[str, Path], emulator: KubeEmulator,
            volume: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Kubelet]:
    """pg-0 with pgGit whose data folder lives on ``volume``; pods/exec served."""
    runner_namespace(admin_client, "default", {names.NAMESPACE_OPT_IN_LABEL: "true"})
    with Kubelet(kubeconfigs, service_accounts={"pggit-chaos-runner": "runner"},
                 restart_delay=0.5, api_server=emulator) as running:
        monkeypatch.setattr(tempfile, "tempdir", str(volume))  # the server's folder only
        try:
            running.add_targets("default", labels=TARGET_LABELS)
        finally:
            monkeypatch.undo()
        assert data_dir(running).is_relative_to(volume)
        yield running
        assert not running.errors, running.errors


def data_dir(kubelet: Kubelet) -> Path:
    server = kubelet.targets[0].replicas[0].server
    return server.data_dir


def balloon(kubelet: Kubelet) -> Path:
    return data_dir(kubelet) / "base" / "pgsql_tmp" / "pgsql_tmp.pggit-chaos-balloon"


def available(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_disk_pressure_through_exec_fills_the_volume_and_frees_it(
        kubelet: Kubelet, admin_client: KubeClient, emulator: KubeEmulator, volume: Path,
        start_operator: Any) -> None:  # noqa: F811
    start_operator(status_interval=0.5, allow_exec=True)
    body = manifest("11")
    name = body["metadata"]["name"]
    assert available(volume) > 100 << 20
    seen = {"balloon": 0, "available": 1 << 40}
    done = threading.Event()

    def watch() -> None:  # read from the machine while the fault is held
        while not done.is_set():
            with contextlib.suppress(OSError):
                seen["balloon"] = max(seen["balloon"], balloon(kubelet).stat().st_size)
            seen["available"] = min(seen["available"], available(volume))
            time.sleep(0.01)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    admin_client.create(EXPERIMENTS, "default", body)
    try:
        wait_injected(admin_client, name, kubelet)
        final = wait_terminal(admin_client, name, kubelet)
    finally:
        done.set()
        watcher.join(5)
    assert seen["available"] == 0, seen
    status = final["status"]
    assert status["phase"] == "Passed" and status["verdict"] == "Pass", explain(final, kubelet)
    evidence = status["faultEvidence"]
    assert evidence["bit"] is True, evidence
    assert "could not extend file" in evidence["summary"], evidence
    assert "No space left on device" in evidence["summary"], evidence
    figures = journal_of(admin_client, status)["fault_evidence"]["figures"]
    assert figures["pg-0_available_bytes_after_fill"] < 16 << 20  # PostgreSQL may free some
    assert figures["pg-0_balloon_bytes"] == seen["balloon"] > 100 << 20
    print(evidence["summary"])
    assert status["workload"]["ok"] > 0 and status["workload"]["lost"] == 0
    assert status.get("faultIntent") is None
    # The balloon is gone (deleted by the revert, or by PostgreSQL's own crash restart) and
    # the volume has room again; the database answers.
    assert not balloon(kubelet).exists()
    assert available(volume) > 100 << 20
    with connect(kubelet.targets[0].dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    exec_verbs = {("", "pods/exec", "get"), ("", "pods/exec", "create")}
    assert exec_verbs <= emulator.rbac_rules("runner")


def test_disk_pressure_is_refused_without_exec(
        kubelet: Kubelet, admin_client: KubeClient, start_operator: Any) -> None:  # noqa: F811
    start_operator(status_interval=0.5, allow_exec=False)
    body = manifest("11")
    admin_client.create(EXPERIMENTS, "default", body)
    final = wait_terminal(admin_client, body["metadata"]["name"], kubelet)
    status = final["status"]
    assert status["phase"] == "Aborted", explain(final, kubelet)
    assert "disk-pressure writes its balloon through pods/exec" in status["message"]
    assert "PGGIT_CHAOS_ALLOW_EXEC=true" in status["message"]
    assert admin_client.list(JOBS, "default") == []
    assert not balloon(kubelet).exists()


def test_a_balloon_above_max_balloon_is_refused_before_injection(
        kubelet: Kubelet, admin_client: KubeClient, volume: Path,
        start_operator: Any) -> None:  # noqa: F811
    """As on a volume that shares a node's disk: the script's plan (df -P in the container)
    finds more to write than maxBalloonMi allows; nothing is written, the run ends in Error."""
    start_operator(status_interval=0.5, allow_exec=True)
    body = manifest("11")
    body["spec"]["fault"]["diskPressure"]["maxBalloonMi"] = 16
    before = available(volume)
    admin_client.create(EXPERIMENTS, "default", body)
    final = wait_terminal(admin_client, body["metadata"]["name"], kubelet)
    status = final["status"]
    assert status["phase"] == "Error", explain(final, kubelet)
    assert "more than maxBalloonMi (16)" in status["message"], status["message"]
    assert "nothing was injected" in status["message"], status["message"]
    assert not status.get("injectedAt") and status.get("faultIntent") is None
    # experiments/11's skip-when-in-cluster annotation names this refusal: kind-e2e skips it.
    assert judged_in_cluster("11", status) is Result.skipped
    assert not balloon(kubelet).exists()
    assert abs(available(volume) - before) < 32 << 20


def test_runner_killed_mid_fault_the_operator_deletes_the_balloon_from_the_intent(
        kubelet: Kubelet, admin_client: KubeClient, emulator: KubeEmulator, volume: Path,
        start_operator: Any) -> None:  # noqa: F811
    """A percentage fill of the data volume stays until someone deletes it: SIGKILL the runner
    and the operator's revert from the intent in status does it through pods/exec."""
    start_operator(status_interval=0.5, allow_exec=True)
    body = manifest("11", duration="60s")
    body["spec"]["fault"]["diskPressure"].update({"volume": "data", "fill": "90%"})
    name = body["metadata"]["name"]
    admin_client.create(EXPERIMENTS, "default", body)
    status = wait_injected(admin_client, name, kubelet)["status"]
    wait_until_filled = time.monotonic() + 60
    while not balloon(kubelet).exists() and time.monotonic() < wait_until_filled:
        time.sleep(0.05)
    time.sleep(1.0)
    size = balloon(kubelet).stat().st_size
    st = os.statvfs(volume)
    assert 1 - st.f_bfree / st.f_blocks >= 0.90 and size > 0
    pods = kubelet.job_pod_names("default", status["runnerJob"])
    kubelet.kill_pod_process("default", pods[-1])  # SIGKILL: no revert of its own
    assert balloon(kubelet).exists(), "something deleted the balloon before the operator"
    final = wait_terminal(admin_client, name, kubelet)
    status = final["status"]
    assert status["phase"] == "Error", explain(final, kubelet)
    assert status["message"] == (
        "runner pod failed (exit 137) mid-fault; fault reverted from its intent (deleted the "
        f"disk-pressure balloon in 1 pod(s): pg-0 ({size} bytes))"), status["message"]
    assert status.get("faultIntent") is None
    assert not balloon(kubelet).exists()
    with connect(kubelet.targets[0].dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    exec_verbs = {("", "pods/exec", "get"), ("", "pods/exec", "create")}
    assert exec_verbs <= emulator.rbac_rules("operator")
