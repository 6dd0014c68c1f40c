"""Every fenced code block in ``docs/**/*.md`` and ``README.md`` is checked.

The rule, by the block's language (the word after the opening fence):

- ``python``: compiled. Run as well when the line above the fence is ``<!-- run -->`` (in a
  subprocess, from the repository root) or ``<!-- run: postgres -->`` (the same, with
  ``DATABASE_URL`` naming a fresh database with the embedded pgGit core; postgres tier).
- ``yaml``: parsed; a ``PgGitChaosExperiment`` document is loaded by the real model
  (``pggit_chaos.spec.loader``) and admitted as the API server would admit it under the CRD
  generated from that model (``tests/kube_schema.admit``, strict: unknown fields fail); a
  ``PgGitChaosSchedule`` likewise, under the schedules' CRD.
- ``bash``/``sh``: ``bash -n``; then every command in it, continuation lines joined:
  ``pggit-chaos ...`` is parsed by the CLI's own argument parser (``checks`` by the checks
  runner's parser), so an option or subcommand that does not exist fails; ``scripts/...``,
  ``bash scripts/...``, ``python scripts/...`` and ``python benchmarks/...`` must name a file of
  the repository, and the options given to ``scripts/kind-e2e`` must be in its ``--help``.
  Commands that need a cluster (``kubectl``, ``helm``, ``docker``, ``kind``) cannot run here:
  their block must be marked ``<!-- not-tested: reason -->``.
- ``text``: a diagram or sample output; not code, counted.
- any other language, or none: a failure (say what the block is).

``<!-- not-tested: reason -->`` on the line above a fence (a reason is required) marks a block
that cannot be exercised here: its syntax is still checked as above, nothing of it runs, and
the count of such blocks is reported by ``test_block_census``.

Beyond the blocks: every quoted symptom in ``docs/testing/TROUBLESHOOTING.md`` is text our code
emits, the settings table of ``docs/operator.md`` lists exactly the settings of ``config.py``,
the experiments reference is not stale, and relative links resolve.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md"]
CLUSTER_PROGRAMS = {"kubectl", "helm", "docker", "kind"}
MARKER = re.compile(r"^<!--\s*(not-tested|run)\s*(?::\s*(.*?))?\s*-->$")


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it is, its language, its marker and its text."""

    path: Path
    line: int
    language: str
    marker: str | None  # "not-tested", "run" or None
    argument: str  # the marker's reason, or "postgres" for run: postgres
    text: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}"


def _blocks(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = re.match(r"^(```+|~~~+)\s*([\w+-]*)", lines[i])
        if not match:
            i += 1
            continue
        fence, language = match.group(1), match.group(2).lower()
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        above = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()),
                     "")
        marker = MARKER.match(above)
        blocks.append(Block(path, start + 1, language,
                            marker.group(1) if marker else None,
                            (marker.group(2) or "") if marker else "",
                            "\n".join(body) + "\n"))
    return blocks


BLOCKS = [block for path in DOCS for block in _blocks(path)]


def _of(*languages: str, marker: str | None = None, argument: str | None = None) -> list[Block]:
    return [b for b in BLOCKS if b.language in languages
            and (marker is None or b.marker == marker)
            and (argument is None or b.argument == argument)]


def _params(blocks: list[Block]) -> list[object]:
    return [pytest.param(block, id=block.id) for block in blocks]


# -------------------------------------------------------------------------------- census


@pytest.mark.unit
def test_block_census() -> None:
    counts = Counter(block.language or "(none)" for block in BLOCKS)
    not_tested = [block for block in BLOCKS if block.marker == "not-tested"]
    print(f"\n{len(BLOCKS)} code blocks in {len(DOCS)} files: {dict(sorted(counts.items()))}")
    print(f"{len(not_tested)} marked not-tested (syntax checked, nothing run):")
    for block in not_tested:
        print(f"  {block.id}: {block.argument}")
    for block in not_tested:
        assert block.argument, f"{block.id}: not-tested needs a reason"
    # The docs this test exists for are really there and really checked.
    assert _of("python", marker="run", argument="postgres"), "no python block runs on a database"
    assert _of("python", marker="run", argument=""), "no self-contained python block runs"
    assert _of("yaml"), "no yaml block"
    assert _of("bash", "sh"), "no shell block"


@pytest.mark.unit
@pytest.mark.parametrize("block", _params(BLOCKS))
def test_block_has_a_known_language(block: Block) -> None:
    assert block.language in {"python", "yaml", "bash", "sh", "text"}, (
        f"{block.id}: a fenced block needs a language (python, yaml, bash, sh, or text for a "
        f"diagram or sample output), not {block.language or 'none'!r}")
    if block.marker == "run":
        assert block.language == "python", f"{block.id}: only python blocks can be run"
        assert block.argument in ("", "postgres"), f"{block.id}: run or run: postgres"


# -------------------------------------------------------------------------------- python


@pytest.mark.unit
@pytest.mark.parametrize("block", _params(_of("python")))
def test_python_block_compiles(block: Block) -> None:
    compile(block.text, block.id, "exec")


def _run_python(block: Block, env: dict[str, str]) -> None:
    proc = subprocess.run([sys.executable, "-c", block.text], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{block.id} failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.mark.unit
@pytest.mark.parametrize("block", _params(_of("python", marker="run", argument="")))
def test_python_block_runs(block: Block) -> None:
    _run_python(block, dict(os.environ))


@pytest.mark.postgres
@pytest.mark.parametrize("block", _params(_of("python", marker="run", argument="postgres")))
def test_python_block_runs_against_pggit(block: Block, pggit_dsn: str, tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": pggit_dsn,
           # hypothesis keeps its example database in the working directory's .hypothesis
           "HYPOTHESIS_STORAGE_DIRECTORY": str(tmp_path / "hypothesis")}
    _run_python(block, env)


@pytest.mark.unit
def test_the_python_rule_fails_a_failing_block() -> None:
    block = Block(ROOT / "x.md", 1, "python", "run", "", "assert 1 + 1 == 3, 'arithmetic'\n")
    with pytest.raises(AssertionError, match="arithmetic"):
        _run_python(block, dict(os.environ))
    with pytest.raises(SyntaxError):
        compile("def broken(:\n", "x.md:1", "exec")
    parsed = _blocks(ROOT / "docs" / "testing" / "PATTERNS.md")
    assert sum(1 for b in parsed if b.marker == "run" and b.argument == "postgres") == 7


# ---------------------------------------------------------------------------------- yaml


@pytest.mark.unit
@pytest.mark.parametrize("block", _params(_of("yaml")))
def test_yaml_block_parses_and_experiments_are_admitted(block: Block) -> None:
    from kube_schema import admit
    from pggit_chaos.spec.crd import build_schedule_crd
    from pggit_chaos.spec.loader import load_experiment_object
    from pggit_chaos.spec.schedule import load_schedule_object

    documents = [doc for doc in yaml.safe_load_all(block.text) if doc is not None]
    assert documents, f"{block.id}: empty"
    for document in documents:
        assert isinstance(document, dict), f"{block.id}: not a mapping"
        if document.get("kind") == "PgGitChaosExperiment":
            load_experiment_object(document, block.id)
            admit(document, strict=True)
        elif document.get("kind") == "PgGitChaosSchedule":
            load_schedule_object(document, block.id)
            admit(document, crd=build_schedule_crd(), strict=True)


# ---------------------------------------------------------------------------------- shell


def _commands(text: str) -> list[list[str]]:
    """The simple commands of a shell block: continuations joined, comments and pipes split."""
    joined = re.sub(r"\\\n", " ", text)
    commands: list[list[str]] = []
    for line in joined.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue  # bash -n judges the syntax
        current: list[str] = []
        redirect_target = False
        for word in [*words, ";"]:
            if redirect_target:  # the file of a redirection is no argument
                redirect_target = False
            elif word in (";", "&&", "||", "|"):
                if current:
                    commands.append(current)
                current = []
            elif re.fullmatch(r"\d?(>>?|<)&?\d?", word):
                redirect_target = not word.endswith(tuple("0123456789"))
            elif re.match(r"^\d?(>>?|<)", word):
                continue  # >file, 2>/dev/null
            else:
                current.append(word)
    cleaned = []
    for words in commands:
        while words and (re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]) or words[0] in ("sudo", "-E")):
            words = words[1:]
        if words:
            cleaned.append(words)
    return cleaned


def _check_pggit_chaos(argv: list[str], where: str) -> None:
    from pggit_chaos.checks.runner import _parser as checks_parser
    from pggit_chaos.cli import build_parser

    try:
        if argv[:1] == ["checks"]:
            checks_parser().parse_args(argv[1:])
        else:
            build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version
        assert exc.code == 0, f"{where}: pggit-chaos {shlex.join(argv)}"
    except Exception as exc:  # the CLI's UsageError, the checks runner's _UsageError
        raise AssertionError(f"{where}: `pggit-chaos {shlex.join(argv)}`: {exc}") from None


_KIND_E2E_HELP: list[str] = []


def _kind_e2e_options() -> str:
    if not _KIND_E2E_HELP:
        proc = subprocess.run(["bash", str(ROOT / "scripts" / "kind-e2e"), "--help"],
                              capture_output=True, text=True, check=True)
        _KIND_E2E_HELP.append(proc.stdout)
    return _KIND_E2E_HELP[0]


@pytest.mark.unit
@pytest.mark.parametrize("block", _params(_of("bash", "sh")))
def test_shell_block(block: Block, capsys: pytest.CaptureFixture[str]) -> None:
    syntax = subprocess.run(["bash", "-n"], input=block.text, capture_output=True, text=True,
                            check=False)
    assert syntax.returncode == 0, f"{block.id}: bash -n: {syntax.stderr}"
    for words in _commands(block.text):
        program = words[0]
        if program in CLUSTER_PROGRAMS:
            assert block.marker == "not-tested", (
                f"{block.id}: `{program}` needs a cluster; mark the block "
                "<!-- not-tested: reason -->")
        elif program == "pggit-chaos":
            _check_pggit_chaos(words[1:], block.id)
            capsys.readouterr()  # --help output of a parsed command
        script = None
        if program.startswith(("scripts/", "./scripts/", "benchmarks/")):
            script = program
        elif program in ("bash", "python", "python3") and len(words) > 1 and \
                words[1].startswith(("scripts/", "benchmarks/")):
            script = words[1]
        if script is not None:
            assert (ROOT / script).is_file(), f"{block.id}: no file {script}"
            if script.endswith("kind-e2e"):
                options = [w.split("=")[0] for w in words if w.startswith("--")]
                for option in options:
                    assert re.search(rf"\s{re.escape(option)}\b", _kind_e2e_options()), (
                        f"{block.id}: scripts/kind-e2e has no option {option}")


def test_shell_checker_catches_bad_commands() -> None:
    """The shell rule is shown to fail: an unknown option, a missing script, bad syntax."""
    with pytest.raises(AssertionError, match="no-such-option"):
        _check_pggit_chaos(["run", "--no-such-option", "x.yaml"], "example")
    with pytest.raises(AssertionError, match="invalid choice"):
        _check_pggit_chaos(["frobnicate"], "example")
    with pytest.raises(AssertionError, match="unrecognized"):
        _check_pggit_chaos(["checks", "--frobnicate"], "example")
    _check_pggit_chaos(["checks", "--dsn", "URL", "--category", "property", "--seed", "1"], "x")
    assert _commands("A=1 sudo -E pggit-chaos run \\\n  x.yaml  # c\nls | wc -l") == [
        ["pggit-chaos", "run", "x.yaml"], ["ls"], ["wc", "-l"]]
    assert _commands("pggit-chaos crd > crd.yaml 2>/dev/null && x 2>&1") == [
        ["pggit-chaos", "crd"], ["x"]]
    bad = subprocess.run(["bash", "-n"], input="if then fi\n", capture_output=True, text=True,
                         check=False)
    assert bad.returncode != 0


@pytest.mark.unit
def test_an_experiment_the_model_rejects_fails_the_yaml_rule() -> None:
    from kube_schema import Invalid, admit
    from pggit_chaos.errors import ChaosError
    from pggit_chaos.spec.loader import load_experiment_object

    document = yaml.safe_load(
        "apiVersion: chaos.pggit.io/v1alpha1\nkind: PgGitChaosExperiment\n"
        "metadata: {name: x}\nspec:\n  target: {selector: {matchLabels: {a: b}}}\n"
        "  fault: {type: pod-kill}\n  duration: soon\n")
    with pytest.raises(ChaosError):
        load_experiment_object(document, "example")
    with pytest.raises(Invalid):
        admit(document, strict=True)


# ------------------------------------------------------------------------ troubleshooting

SOURCE_TEXT = "\n".join(
    path.read_text() for path in (ROOT / "operator" / "pggit_chaos").rglob("*")
    if path.suffix in (".py", ".sql") and path.is_file())


def _symptoms() -> list[tuple[str, str]]:
    text = (ROOT / "docs" / "testing" / "TROUBLESHOOTING.md").read_text()
    found = []
    for paragraph in re.split(r"\n\s*\n", text):
        if paragraph.startswith("**Symptom**"):
            quoted = re.findall(r"`([^`\n]+)`", paragraph)
            assert quoted, f"a symptom quotes no message: {paragraph[:80]}"
            found.append((paragraph.splitlines()[0], quoted[0]))
    return found


@pytest.mark.unit
def test_troubleshooting_symptoms_are_messages_our_code_emits() -> None:
    symptoms = _symptoms()
    assert len(symptoms) >= 10
    missing = [quoted for _, quoted in symptoms if quoted not in SOURCE_TEXT]
    assert not missing, f"quoted symptoms not in operator/pggit_chaos: {missing}"
    text = (ROOT / "docs" / "testing" / "TROUBLESHOOTING.md").read_text()
    for topic in ("RBAC denied", "resize unsupported", "NetworkPolicy not enforced",
                  "finalizer"):
        assert re.search(rf"^### .*{re.escape(topic)}", text, re.M | re.I), topic


@pytest.mark.unit
def test_a_made_up_symptom_would_fail() -> None:
    assert "the flux capacitor is out of sync" not in SOURCE_TEXT
    assert "has not opted in: kubectl label namespace" in SOURCE_TEXT


# ------------------------------------------------------------------------- operator.md


@pytest.mark.unit
def test_operator_settings_table_lists_every_setting() -> None:
    from pggit_chaos.config import Settings

    text = (ROOT / "docs" / "operator.md").read_text()
    table = re.findall(r"^\| `(PGGIT_CHAOS_[A-Z_]+)` \| (.*?) \|", text, re.M)
    documented = {name: default for name, default in table}
    expected = {f"PGGIT_CHAOS_{name.upper()}": field for name, field in
                Settings.model_fields.items()}
    assert set(documented) == set(expected)
    for name, field in expected.items():
        default = field.default
        if field.default_factory is None and default not in (None, ""):
            shown = str(default).lower() if isinstance(default, bool) else str(default)
            assert shown in documented[name], f"{name}: default {shown} not in the table"


# ------------------------------------------------------------------ experiments reference


@pytest.mark.unit
def test_experiments_reference_is_current(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "render-experiments-reference"
    check = subprocess.run([sys.executable, str(script), "--check"], cwd=ROOT,
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    # And the check fails on a stale copy.
    copy = tmp_path / "reference.md"
    subprocess.run([sys.executable, str(script), "--output", str(copy)], check=True,
                   capture_output=True)
    copy.write_text(copy.read_text().replace("| `duration` |", "| `durations` |"))
    stale = subprocess.run([sys.executable, str(script), "--check", "--output", str(copy)],
                           capture_output=True, text=True, check=False)
    assert stale.returncode == 1 and "is stale" in stale.stderr


@pytest.mark.unit
def test_experiments_reference_names_every_model_field() -> None:
    from pggit_chaos.spec import model

    text = (ROOT / "docs" / "experiments-reference.md").read_text()
    for fault_type, (_, alias, settings) in model.SECTIONS.items():
        assert f"| `{fault_type.value}` |" in text
        assert f"### `spec.fault.{alias}`" in text or not settings.model_fields
    for section in (model.ExperimentSpec, model.Workload, model.Recovery, model.Verification,
                    model.Target):
        for name, field in section.model_fields.items():
            assert f"| `{field.alias or name}`" in text, f"{section.__name__}.{name}"


# ---------------------------------------------------------------------------------- links


@pytest.mark.unit
def test_relative_links_resolve() -> None:
    broken = []
    for path in DOCS:
        prose = re.sub(r"`[^`\n]*`", "", path.read_text())  # not inside code spans
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", prose):
            if re.match(r"^[a-z]+:", target):
                continue
            if not (path.parent / target).exists():
                broken.append(f"{path.relative_to(ROOT)} -> {target}")
    assert not broken, broken
