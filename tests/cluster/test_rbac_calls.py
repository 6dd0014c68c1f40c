"""The emulator-only tests stay within the RBAC the real API server audited.

charts/pggit-chaos/api-calls.yaml is recorded on the real node (tests/realnode/
test_the_chart_rbac.py, from the API server's audit log). Runs after the other tests of this
folder (file order), so :data:`api_calls.RECORDED` holds what the session's emulators saw the
operator and the runner do; any such call the real server never saw is a call the product makes
only on the emulator (or a path the real-node tests miss), and fails here.
"""

from __future__ import annotations

import pytest

from cluster import api_calls

pytestmark = pytest.mark.kube

def test_every_recorded_call_is_in_the_committed_file() -> None:
    committed = api_calls.load()
    assert committed["operator"] and committed["runner"], "the committed file is empty"
    for identity in api_calls.IDENTITIES:
        missing = sorted(api_calls.RECORDED[identity] - committed[identity])
        assert not missing, (
            f"on the emulator the {identity} made API calls the real API server never saw "
            f"({api_calls.API_CALLS_FILE.name} does not list them): {missing}; if the product "
            "really makes them, exercise that path in tests/realnode and regenerate the file "
            "from the audit log (see tests/cluster/api_calls.py)")


def test_the_runner_never_reads_secrets() -> None:
    """Credentials reach the Jobs as secretKeyRef env only: no get/list/watch on Secrets."""
    committed = api_calls.load()
    for identity in api_calls.IDENTITIES:
        assert not [rule for rule in committed[identity] if rule[1] == "secrets"], identity


def test_the_committed_file_says_which_calls_are_namespaced() -> None:
    """The chart puts namespaced calls into Roles, cluster-scoped ones into a ClusterRole."""
    import yaml

    document = yaml.safe_load(api_calls.API_CALLS_FILE.read_text())
    for identity in api_calls.IDENTITIES:
        for rule in document[identity]:
            assert rule["namespaced"] == api_calls.namespaced(rule["apiGroup"], rule["resource"])
    assert api_calls.namespaced("", "pods/exec") and not api_calls.namespaced("", "namespaces")
