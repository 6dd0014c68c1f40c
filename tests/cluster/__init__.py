"""The test cluster: a faithful Kubernetes API server (``cluster.emulator``) and its fixtures."""

from cluster.emulator import (
    EmulatorServer,
    KubeEmulator,
    apply_manifest,
    namespace,
    write_kubeconfig,
)

__all__ = ["EmulatorServer", "KubeEmulator", "apply_manifest", "namespace", "write_kubeconfig"]
