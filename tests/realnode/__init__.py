"""Tests on the real single-node Kubernetes of ``scripts/real-node``: the chart installed with
helm, the real operator Deployment, real Jobs on a real kubelet (see ``conftest``)."""
