"""Expected outcomes from an experiment's annotations (:mod:`pggit_chaos.spec.expect`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pggit_chaos.errors import InvalidExperiment
from pggit_chaos.spec.expect import Expectation, Outcome, Result, expectation_of
from pggit_chaos.spec.loader import load_experiments_text, load_paths

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent


def _text(annotations: str) -> str:
    return f"""\
apiVersion: chaos.pggit.io/v1alpha1
kind: PgGitChaosExperiment
metadata:
  name: x
  annotations: {annotations}
spec:
  target: {{selector: {{matchLabels: {{app: db}}}}}}
  fault: {{type: pod-kill}}
"""


def test_without_annotations_an_experiment_expects_passed_everywhere() -> None:
    (experiment,) = load_experiments_text(_text("{}"))
    for in_cluster in (False, True):
        assert expectation_of(experiment, in_cluster=in_cluster) == Expectation(Outcome("Passed"))


def test_the_in_cluster_keys_replace_the_plain_ones_in_a_cluster_only() -> None:
    (experiment,) = load_experiments_text(_text(
        '{"chaos.pggit.io/expect": "Failed: amcheck", '
        '"chaos.pggit.io/expect-in-cluster": "Aborted: refused by the destructive gate", '
        '"chaos.pggit.io/skip-when": "Error: needs root\\nInconclusive: did not bite"}'))
    local = expectation_of(experiment, in_cluster=False)
    cluster = expectation_of(experiment, in_cluster=True)
    assert local == Expectation(Outcome("Failed", "amcheck"),
                                (Outcome("Error", "needs root"),
                                 Outcome("Inconclusive", "did not bite")))
    assert cluster.expected == Outcome("Aborted", "refused by the destructive gate")
    assert cluster.skips == local.skips  # no skip-when-in-cluster: the plain key holds
    assert local.judge("Failed", "2 check(s) failed: test_amcheck_x").result is Result.met
    assert local.judge("Failed", "3 acknowledged writes lost").result is Result.unexpected
    assert local.judge("Passed", "").result is Result.unexpected
    assert local.judge("Error", "it needs root to mount").result is Result.skipped
    assert local.judge("Error", "something else").result is Result.unexpected


@pytest.mark.parametrize(("annotations", "key", "got"), [
    ('{"chaos.pggit.io/expect": "Fial"}', "chaos.pggit.io/expect", "'Fial'"),
    ('{"chaos.pggit.io/expect": "Failed:"}', "chaos.pggit.io/expect", "'Failed:'"),
    ('{"chaos.pggit.io/expect-in-cluster": "passed"}', "chaos.pggit.io/expect-in-cluster",
     "'passed'"),
    # A skip must name the text that identifies it: a bare phase would swallow every reason.
    ('{"chaos.pggit.io/skip-when": "Error"}', "chaos.pggit.io/skip-when", "'Error'"),
    ('{"chaos.pggit.io/skip-when-in-cluster": "Aborted: x\\nOops: y"}',
     "chaos.pggit.io/skip-when-in-cluster", "'Oops: y'"),
    ('{"chaos.pggit.io/expected": "Failed"}', "chaos.pggit.io/expected", "unknown annotation"),
])
def test_a_bad_value_is_one_line_naming_the_file_the_key_and_the_allowed_values(
    annotations: str, key: str, got: str
) -> None:
    with pytest.raises(InvalidExperiment) as caught:
        load_experiments_text(_text(annotations), "dir/x.yaml")
    (line,) = caught.value.lines()
    assert line.startswith(f"dir/x.yaml: metadata.annotations[{key!r}]: "), line
    assert got in line
    if "unknown" not in got:
        assert "Passed, Failed, Inconclusive, Aborted, Error" in line


def test_other_annotations_are_left_alone() -> None:
    (experiment,) = load_experiments_text(_text(
        '{"chaos.pggit.io/abort": "true", "example.com/owner": "me"}'))
    assert expectation_of(experiment, in_cluster=True) == Expectation()


def test_the_example_experiments_declare_what_kind_e2e_and_the_tests_expect() -> None:
    by_name = {e.name: e for e in load_paths([ROOT / "experiments"])}
    local = {name: expectation_of(e, in_cluster=False) for name, e in by_name.items()}
    cluster = {name: expectation_of(e, in_cluster=True) for name, e in by_name.items()}
    assert local["index-corruption"].expected.phase == "Failed"
    assert cluster["index-corruption"].judge(
        "Aborted", "refused by the destructive gate: index-corruption destroys data").ok
    assert cluster["clock-skew"].judge(
        "Error", "spec.fault.type: clock-skew is refused in a cluster: ...").ok
    assert cluster["primary-failover"].judge(
        "Aborted", "no Running and Ready pod ... carries the primary label "
        "cnpg.io/instanceRole=primary (...): nothing to inject").result is Result.skipped
    assert cluster["disk-pressure"].judge(
        "Error", "the balloon would be 51200 MiB, more than maxBalloonMi (1024)").result \
        is Result.skipped
    others = set(by_name) - {"index-corruption", "clock-skew", "primary-failover",
                             "disk-pressure"}
    for name in others | {"clock-skew", "primary-failover", "disk-pressure"}:
        assert local[name] == Expectation(), name
    for name in others:
        assert cluster[name] == Expectation(), name
