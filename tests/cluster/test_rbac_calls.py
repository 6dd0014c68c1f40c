"""The committed list of API calls equals what the operator and the runner did in the tests.

Runs after the other tests of this folder (file order), so :data:`api_calls.RECORDED` holds what
the session's emulators saw. Any subset of the suite must stay within the committed file; a
whole run of this folder without failures must also have made every call the file lists (the
chart grants exactly the file: a call no test made would be a permission nobody needs).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster import api_calls

pytestmark = pytest.mark.kube

FOLDER = Path(__file__).resolve().parent


def _whole_clean_run(session: pytest.Session) -> str | None:
    """None when this session ran every test of this folder with none failed, else why not."""
    from cluster.conftest import DESELECTED

    config = session.config
    if DESELECTED:
        return f"tests of {sorted(p.name for p in DESELECTED)} were deselected (-k/-m)"
    if config.getoption("lf", False) or config.getoption("deselect", None):
        return "tests were deselected"
    for arg in config.args:
        path = Path(arg.split("::", 1)[0]).resolve()
        if "::" in arg or not (path.is_dir() and (path == FOLDER or path in FOLDER.parents)):
            return f"only {arg} was run"
    if session.testsfailed:
        return "a test failed (its calls may be missing)"
    files = {Path(str(item.path)).resolve() for item in session.items}
    missing = sorted(p.name for p in FOLDER.glob("test_*.py") if p.resolve() not in files)
    return f"{missing} were not run" if missing else None


def test_every_recorded_call_is_in_the_committed_file() -> None:
    committed = api_calls.load()
    assert committed["operator"] and committed["runner"], "the committed file is empty"
    for identity in api_calls.IDENTITIES:
        missing = sorted(api_calls.RECORDED[identity] - committed[identity])
        assert not missing, (
            f"{identity} made API calls {api_calls.API_CALLS_FILE.name} does not list: "
            f"{missing}; rerun with {api_calls.RECORD_ENV}=1 to regenerate it")


def test_every_committed_call_was_made_by_a_test(request: pytest.FixtureRequest) -> None:
    why_not = _whole_clean_run(request.session)
    if why_not is not None:
        pytest.skip(f"needs a whole run of {FOLDER.name}/ without failures: {why_not}")
    committed = api_calls.load()
    for identity in api_calls.IDENTITIES:
        unused = sorted(committed[identity] - api_calls.RECORDED[identity])
        assert not unused, (
            f"{api_calls.API_CALLS_FILE.name} lists calls no test made as {identity}: {unused} "
            f"(the chart would grant them); remove the file and rerun with "
            f"{api_calls.RECORD_ENV}=1 to regenerate it")


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
