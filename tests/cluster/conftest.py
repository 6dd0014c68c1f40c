"""Fixtures of the test cluster: the API server over HTTP, kubeconfigs per identity, a client.

``emulator_server`` starts a fresh :class:`cluster.emulator.KubeEmulator` for each test (about
10 ms); ``kubeconfigs`` writes one kubeconfig per identity (operator, runner, kubelet, admin),
each with its own bearer token so that the emulator records who made which request;
``admin_client`` is a :class:`pggit_chaos.kube.client.KubeClient` for "admin".
``apply_manifest(client, body)`` and ``namespace(client, name, labels)`` are plain functions of
:mod:`cluster.emulator` (re-exported here and by :mod:`cluster`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cluster import api_calls
from cluster.emulator import (
    IDENTITIES,
    EmulatorServer,
    KubeEmulator,
    apply_manifest,
    namespace,
    write_kubeconfig,
)
from pggit_chaos.kube.client import KubeClient

__all__ = ["apply_manifest", "namespace"]

FOLDER = Path(__file__).resolve().parent
#: Test files of this folder that -k/-m deselected in this session (test_rbac_calls reads it).
DESELECTED: set[Path] = set()


def pytest_deselected(items: list[pytest.Item]) -> None:
    DESELECTED.update(Path(str(item.path)).resolve() for item in items
                      if FOLDER in Path(str(item.path)).resolve().parents)


@pytest.fixture
def emulator_server() -> Iterator[EmulatorServer]:
    """A fresh test API server on 127.0.0.1, stopped after the test."""
    with EmulatorServer(KubeEmulator()) as server:
        yield server
        api_calls.record(server.emulator)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With PGGIT_CHAOS_RECORD_API_CALLS=1: rewrite the committed list of API calls."""
    if os.environ.get(api_calls.RECORD_ENV) == "1" and api_calls.RECORDED:
        merged = api_calls.load()
        for identity, calls in api_calls.RECORDED.items():
            merged[identity] |= calls
        api_calls.write(merged)


@pytest.fixture
def emulator(emulator_server: EmulatorServer) -> KubeEmulator:
    return emulator_server.emulator


@pytest.fixture
def kubeconfigs(emulator_server: EmulatorServer, tmp_path: Path) -> dict[str, Path]:
    """identity → the path of a kubeconfig that authenticates as that identity."""
    return {identity: write_kubeconfig(
        tmp_path / "kube" / f"{identity}.yaml", emulator_server.url,
        emulator_server.emulator.token_for(identity)) for identity in IDENTITIES}


@pytest.fixture
def admin_client(kubeconfigs: dict[str, Path]) -> KubeClient:
    return KubeClient.from_environment(kubeconfig=str(kubeconfigs["admin"]))


@pytest.fixture
def client_for(kubeconfigs: dict[str, Path]) -> Callable[[str], KubeClient]:
    """``client_for("runner")``: a KubeClient for one identity."""

    def make(identity: str) -> KubeClient:
        return KubeClient.from_environment(kubeconfig=str(kubeconfigs[identity]))

    return make
