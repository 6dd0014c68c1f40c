"""The committed list of API calls covers every call the operator and the runner made.

Runs after the other tests of this folder (file order), so :data:`api_calls.RECORDED` holds what
the session's emulators saw; any subset of the suite must stay within the committed file.
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
            f"{identity} made API calls {api_calls.API_CALLS_FILE.name} does not list: "
            f"{missing}; rerun with {api_calls.RECORD_ENV}=1 to regenerate it")


def test_the_runner_never_reads_secrets() -> None:
    """Credentials reach the Jobs as secretKeyRef env only: no get/list/watch on Secrets."""
    committed = api_calls.load()
    for identity in api_calls.IDENTITIES:
        assert not [rule for rule in committed[identity] if rule[1] == "secrets"], identity
