"""The GitHub workflows and the hand-written YAML, validated offline as CI would.

- every workflow against GitHub's workflow schema (``check-jsonschema --builtin-schema
  vendor.github-workflows``, the schema ships inside check-jsonschema);
- every workflow with actionlint (expressions, contexts, action inputs, and shellcheck over
  each ``run:`` script when shellcheck is on PATH);
- yamllint (``.yamllint``) over the workflows, the kind config, ``experiments/`` and the
  chart's values (not its templates: Go templates are not YAML);
- what the kind job must do: Kubernetes >= 1.33 pinned by digest, a kind whose kindnet enforces
  NetworkPolicy, the image built and loaded under the tag the script installs, the repo's own
  script doing the rest, artifacts uploaded also on failure, every action pinned by commit SHA.

Each validator is also shown to fail on a deliberately broken input, so a green run means the
validator looked.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
KIND_CONFIG = ROOT / ".github" / "kind-config.yaml"
KIND_E2E = ROOT / ".github" / "workflows" / "kind-e2e.yml"
CI = ROOT / ".github" / "workflows" / "ci.yml"

BROKEN_WORKFLOW = """\
name: broken
on: push
jobs:
  test:
    steps:
      - run: echo "${{ github.no_such_property }}"
      - uses: actions/checkout@v4
        with:
          no-such-input: true
"""


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed (it is a dev dependency in pyproject.toml)"
    return path


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=False)


def _load(path: Path) -> dict[str, Any]:
    # PyYAML reads the key `on` as the boolean True (YAML 1.1); GitHub reads it as "on".
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    if True in data:
        data["on"] = data.pop(True)
    return data


def _steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def test_the_workflows_exist() -> None:
    assert {path.name for path in WORKFLOWS} >= {"ci.yml", "kind-e2e.yml"}


# ----------------------------------------------------------------------------- validators


def test_workflows_match_githubs_workflow_schema(tmp_path: Path) -> None:
    tool = _tool("check-jsonschema")
    ok = _run(tool, "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS))
    assert ok.returncode == 0, ok.stdout + ok.stderr

    broken = tmp_path / "broken.yml"
    broken.write_text(BROKEN_WORKFLOW)  # the job has no runs-on
    bad = _run(tool, "--builtin-schema", "vendor.github-workflows", str(broken))
    assert bad.returncode == 1
    assert "runs-on" in bad.stdout + bad.stderr


def test_workflows_pass_actionlint(tmp_path: Path) -> None:
    tool = _tool("actionlint")
    _tool("shellcheck")  # actionlint runs it over every run: script when it is on PATH
    ok = _run(tool, "-no-color", *map(str, WORKFLOWS))
    assert ok.returncode == 0, ok.stdout + ok.stderr

    broken = tmp_path / "broken.yml"
    broken.write_text(BROKEN_WORKFLOW)
    bad = _run(tool, "-no-color", str(broken))
    assert bad.returncode == 1
    out = bad.stdout + bad.stderr
    assert "no_such_property" in out  # an undefined context property
    assert "runs-on" in out  # a job without a runner

    shell = tmp_path / "shell.yml"
    shell.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - run: for f in $(ls *.yaml); do cat $f; done\n"
    )
    bad = _run(tool, "-no-color", str(shell))
    assert bad.returncode == 1
    assert "shellcheck" in bad.stdout and "SC2045" in bad.stdout


def _yamllint_targets() -> list[Path]:
    targets = [*WORKFLOWS, KIND_CONFIG, ROOT / ".yamllint"]
    targets += sorted((ROOT / "experiments").glob("*.yaml"))
    targets += sorted((ROOT / "charts").glob("*/values.yaml"))
    return targets


def test_yamllint_passes_on_workflows_experiments_and_chart_values(tmp_path: Path) -> None:
    tool = _tool("yamllint")
    targets = _yamllint_targets()
    names = {path.relative_to(ROOT).as_posix() for path in targets}
    assert "charts/pggit-chaos/values.yaml" in names
    assert "experiments/01-pod-kill.yaml" in names
    ok = _run(tool, "--strict", "-c", str(ROOT / ".yamllint"), *map(str, targets))
    assert ok.returncode == 0, ok.stdout + ok.stderr

    broken = tmp_path / "broken.yaml"
    broken.write_text("spec:\n  duration: 5s\n  duration: 6s   \n")
    bad = _run(tool, "--strict", "-c", str(ROOT / ".yamllint"), str(broken))
    assert bad.returncode != 0
    assert "key-duplicates" in bad.stdout and "trailing-spaces" in bad.stdout


def test_yamllint_config_ignores_chart_templates(tmp_path: Path) -> None:
    """Templates are Go templates: the config must leave them out (`yamllint .` stays green)."""
    tool = _tool("yamllint")
    template = tmp_path / "charts" / "x" / "templates" / "deployment.yaml"
    template.parent.mkdir(parents=True)
    template.write_text("{{- if .Values.x }}\nkind: Deployment\n{{- end }}\n")
    config = tmp_path / ".yamllint"
    config.write_text((ROOT / ".yamllint").read_text())
    ignored = subprocess.run([tool, "--strict", "-c", str(config), "."], cwd=tmp_path,
                             capture_output=True, text=True, check=False)
    assert ignored.returncode == 0, ignored.stdout
    linted = subprocess.run([tool, "--strict", "-d", "default", "."], cwd=tmp_path,
                            capture_output=True, text=True, check=False)
    assert linted.returncode != 0  # without the config's ignore, the template is an error


# ------------------------------------------------------------------------- what CI runs


def test_ci_runs_ci_run_as_root() -> None:
    steps = _steps(_load(CI))
    runs = [step["run"] for step in steps if "run" in step]
    assert any(re.search(r"sudo -E .*bash \.ci/run", run) for run in runs), runs


def test_every_action_is_pinned_by_commit_sha() -> None:
    for path in WORKFLOWS:
        text = path.read_text()
        uses = re.findall(r"uses:\s*(\S+)(.*)", text)
        assert uses, path
        for ref, comment in uses:
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", ref), f"{path.name}: {ref}"
            assert re.search(r"#\s*v\d", comment), f"{path.name}: {ref} without a version comment"


def _version(text: str) -> tuple[int, ...]:
    match = re.search(r"v(\d+)\.(\d+)\.(\d+)", text)
    assert match, text
    return tuple(int(part) for part in match.groups())


def test_kind_job_runs_kubernetes_133_pinned_by_digest_with_networkpolicy() -> None:
    workflow = _load(KIND_E2E)
    env = workflow["env"]
    node_image = env["KIND_NODE_IMAGE"]
    assert re.fullmatch(r"kindest/node:v\d+\.\d+\.\d+@sha256:[0-9a-f]{64}", node_image)
    assert _version(node_image) >= (1, 33, 0)  # in-place pod resize (cpu/memory faults)
    # kindnet enforces NetworkPolicy from kind v0.24 on (network-partition relies on it).
    assert _version(env["KIND_VERSION"]) >= (0, 24, 0)
    config = yaml.safe_load(KIND_CONFIG.read_text())
    assert config["kind"] == "Cluster"
    assert not config.get("networking", {}).get("disableDefaultCNI", False)
    kind_step = next(s for s in _steps(workflow) if "kind-action" in s.get("uses", ""))
    assert kind_step["with"]["node_image"] == "${{ env.KIND_NODE_IMAGE }}"
    assert kind_step["with"]["version"] == "${{ env.KIND_VERSION }}"
    assert kind_step["with"]["config"] == KIND_CONFIG.relative_to(ROOT).as_posix()


def test_kind_job_builds_loads_and_hands_over_to_the_script() -> None:
    workflow = _load(KIND_E2E)
    env = workflow["env"]
    assert env["IMAGE"] == "pggit-chaos:e2e"  # the tag scripts/kind-e2e installs by default
    steps = _steps(workflow)
    runs = [step.get("run", "") for step in steps]

    def position(pattern: str) -> int:
        hits = [i for i, run in enumerate(runs) if re.search(pattern, run)]
        assert hits, pattern
        return hits[0]

    build = position(r"docker build --file operator/Dockerfile --tag \"\$IMAGE\" \.$")
    load = position(r"kind load docker-image \"\$IMAGE\" --name \"\$KIND_CLUSTER\"")
    script = position(r"^scripts/kind-e2e ")
    assert build < load < script
    assert (ROOT / "scripts" / "kind-e2e").stat().st_mode & 0o111, "scripts/kind-e2e not executable"
    assert '--image "$IMAGE"' in runs[script] and '--artifacts "$ARTIFACTS"' in runs[script]
    # helm and pggit-chaos (for `pggit-chaos report`) are there before the script runs.
    assert position(r"pip install \.") < script
    assert next(i for i, s in enumerate(steps) if "setup-helm" in s.get("uses", "")) < script
    upload = next(step for step in steps if "upload-artifact" in step.get("uses", ""))
    assert upload["if"] == "always()"
    assert upload["with"]["path"] == "${{ env.ARTIFACTS }}"
    assert steps.index(upload) > script
