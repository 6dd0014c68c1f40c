"""disk-pressure with exec disabled in the operator: refused before anything runs.

Why on the emulator: the real node's chart has exec enabled (its pod-pause and disk-pressure
runs, the balloon above maxBalloonMi and the operator deleting a SIGKILLed runner's balloon are
in tests/realnode/test_real_cluster.py); exec disabled would be a second chart install.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.emulator import KubeEmulator, runner_namespace
from cluster.kubelet import Kubelet
from cluster.test_experiments import (
    TARGET_LABELS,
    explain,
    manifest,
    wait_terminal,
)
from cluster.test_operator import start_operator  # noqa: F401  (the fixture)
from pggit_chaos.kube import names
from pggit_chaos.kube.client import EXPERIMENTS, JOBS, KubeClient

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


# Emulator-only: the chart on the real node has exec enabled (pod-pause and disk-pressure run
# there); exec disabled is a second chart install.
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


