"""Fixtures of the test cluster: the API server over HTTP, kubeconfigs per identity, a client.

``emulator_server`` starts a fresh :class:`cluster.emulator.KubeEmulator` for each test (about
10 ms); ``kubeconfigs`` writes one kubeconfig per identity (operator, runner, kubelet, admin),
each with its own bearer token so that the emulator records who made which request;
``admin_client`` is a :class:`pggit_chaos.kube.client.KubeClient` for "admin".
``apply_manifest(client, body)`` and ``namespace(client, name, labels)`` are plain functions of
:mod:`cluster.emulator` (re-exported here and by :mod:`cluster`).
"""

from __future__ import annotations

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

@pytest.fixture
def emulator_server() -> Iterator[EmulatorServer]:
    """A fresh test API server on 127.0.0.1, stopped after the test."""
    with EmulatorServer(KubeEmulator()) as server:
        yield server
        api_calls.record(server.emulator)


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
