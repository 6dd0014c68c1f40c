"""Load experiments from YAML (files, folders, text, CR bodies) and report every problem at once.

Called by the CLI (``pggit-chaos run|validate``), the operator (a CR body) and the tests.
Whatever goes wrong — a missing file, YAML syntax, a non-mapping document, a bad field — ends
up as one :class:`~pggit_chaos.errors.InvalidExperiment` listing ``(field path, reason)``
pairs, e.g. ``("spec.fault.cpuThrottle.cpuPercent", "must be at least 1")``; never a
traceback. A file's outcome annotations (``chaos.pggit.io/expect``, ...:
:mod:`pggit_chaos.spec.expect`) are checked here too; the operator does not act on them. A
folder stands for its ``*.yaml``/``*.yml`` files in name order, as with
``kubectl apply -f``; other Kubernetes objects there (a ConfigMap beside the experiments, any
apiVersion outside ``chaos.pggit.io``) are skipped with a note, as ``kubectl`` users expect.
YAML is read as kubectl reads it (:mod:`pggit_chaos.spec.kubeyaml`:
``y`` is true, ``1e9`` a number), so a file means to the model what it means to the CRD.
Imports only pydantic and PyYAML, so a bad file is reported fast.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from pggit_chaos.errors import DOCUMENT, InvalidExperiment, problem_where
from pggit_chaos.spec.expect import expectation_problems
from pggit_chaos.spec.kubeyaml import KubectlLoader
from pggit_chaos.spec.model import DNS1123_LABEL, DNS1123_SUBDOMAIN, GROUP, KIND, Experiment

__all__ = [
    "DOCUMENT",
    "YAML_SUFFIXES",
    "LoadedFile",
    "experiment_files",
    "load_each",
    "load_experiment_object",
    "load_experiments",
    "load_experiments_text",
    "load_paths",
    "other_kind",
]

#: Names of the files a folder contributes (``kubectl apply -f DIR`` takes the same).
YAML_SUFFIXES = (".yaml", ".yml")

_TYPE_NAMES = {
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "int_from_float": "an integer",
}
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class LoadedFile:
    """One file (or folder) given on the command line: its experiments, or why it is invalid."""

    path: str
    experiments: list[Experiment] = field(default_factory=list)
    error: InvalidExperiment | None = None
    #: One note per other Kubernetes object the file holds (skipped, not an error).
    skipped: list[str] = field(default_factory=list)


def experiment_files(paths: Sequence[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """The files ``paths`` stand for (a folder: its YAML files in name order), and problems.

    A folder without a YAML file is a problem (``(folder, reason)``); files are returned as
    given, whether they exist or not (:func:`load_experiments` says why one cannot be read).
    """
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    for given in paths:
        path = Path(given)
        if not path.is_dir():
            files.append(path)
            continue
        found = sorted(
            (
                entry
                for entry in path.iterdir()
                if entry.suffix in YAML_SUFFIXES
                and not entry.name.startswith(".")
                and entry.is_file()
            ),
            key=lambda entry: entry.name,
        )
        if not found:
            problems.append((str(path), "no *.yaml or *.yml file in this folder"))
        files.extend(found)
    return files, problems


def load_each(paths: Sequence[str | Path]) -> list[LoadedFile]:
    """Every file ``paths`` stand for, loaded on its own (an invalid one does not stop the rest)."""
    files, problems = experiment_files(paths)
    loaded = [LoadedFile(where, error=InvalidExperiment([(DOCUMENT, why)], where))
              for where, why in problems]
    for path in files:
        skipped: list[str] = []
        try:
            loaded.append(LoadedFile(str(path), load_experiments(path, skipped), skipped=skipped))
        except InvalidExperiment as error:
            loaded.append(LoadedFile(str(path), error=error, skipped=skipped))
    return loaded


def load_paths(paths: Sequence[str | Path], notes: list[str] | None = None) -> list[Experiment]:
    """Every experiment of every file and folder; all problems of all files raised together.

    The raised :class:`InvalidExperiment` has no source: each problem's path starts with its
    file (``experiments/x.yaml: spec.duration``). Other Kubernetes objects are skipped; one
    line for each goes to ``notes``. Paths holding no experiment at all are an error.
    """
    loaded = load_each(paths)
    problems = [
        (problem_where(item.error.source or item.path, path), reason)
        for item in loaded
        if item.error is not None
        for path, reason in item.error.problems
    ]
    if problems:
        raise InvalidExperiment(problems)
    skipped = [note for item in loaded for note in item.skipped]
    if notes is not None:
        notes.extend(skipped)
    experiments = [experiment for item in loaded for experiment in item.experiments]
    if not experiments:
        given = ", ".join(str(path) for path in paths)
        raise InvalidExperiment(
            [(DOCUMENT, f"no {KIND} in it, only {len(skipped)} other Kubernetes "
                        f"object{'' if len(skipped) == 1 else 's'} (skipped)")],
            given,
        )
    return experiments


def load_experiments(path: str | Path, skipped: list[str] | None = None) -> list[Experiment]:
    """Every experiment of a YAML file (one or many ``---`` documents; empty ones skipped).

    Other Kubernetes objects are skipped; a note for each goes to ``skipped``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InvalidExperiment([(DOCUMENT, _unreadable(error))], str(path)) from None
    except UnicodeDecodeError as error:
        reason = (
            f"not UTF-8 text (byte {error.object[error.start]:#04x} at offset {error.start}): "
            "save it as UTF-8"
        )
        raise InvalidExperiment([(DOCUMENT, reason)], str(path)) from None
    return load_experiments_text(text, str(path), skipped)


def _unreadable(error: OSError) -> str:
    if isinstance(error, FileNotFoundError):
        return "no such file: check the path"
    if isinstance(error, IsADirectoryError):
        return "is a folder: give its YAML files or the folder itself to run or validate"
    if isinstance(error, PermissionError):
        return "permission denied: make the file readable for this user"
    reason = (error.strerror or type(error).__name__).lower()
    return f"cannot read the file: {reason}"


def other_kind(document: object) -> str | None:
    """``ConfigMap settings (v1)`` when ``document`` is a Kubernetes object of another kind.

    Another kind is one whose ``apiVersion`` is outside :data:`GROUP` *and* whose ``kind`` is
    not :data:`KIND`: a misspelt kind or version of an experiment is still reported as invalid.
    """
    if not isinstance(document, Mapping):
        return None
    api_version, kind = document.get("apiVersion"), document.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str) or not kind:
        return None
    group = api_version.rpartition("/")[0]
    if group == GROUP or kind == KIND:
        return None
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return f"{kind}{f' {name}' if isinstance(name, str) and name else ''} ({api_version})"


def load_experiments_text(
    text: str, source: str = "<text>", skipped: list[str] | None = None
) -> list[Experiment]:
    """Every experiment of YAML ``text``; ``source`` names it in errors (``file#2``).

    All documents are checked before anything is raised. With one invalid document the
    error's source is ``file#N``; with several it is ``file`` and each path starts with the
    document number (``#2 spec.duration``). A document of another Kubernetes kind
    (:func:`other_kind`) is skipped, with a note in ``skipped``; a text holding only such
    documents gives no experiment and no error.
    """
    try:
        documents = [doc for doc in yaml.load_all(text, Loader=KubectlLoader)
                     if doc is not None]
    except yaml.YAMLError as error:
        raise InvalidExperiment([(DOCUMENT, _yaml_reason(error, text))], source) from None
    if not documents:
        raise InvalidExperiment([(DOCUMENT, "no experiment in the file (it is empty)")], source)
    many = len(documents) > 1
    experiments: list[Experiment] = []
    failures: list[tuple[int, InvalidExperiment]] = []
    for number, document in enumerate(documents, start=1):
        where = f"{source}#{number}" if many else source
        other = other_kind(document)
        if other is not None:
            if skipped is not None:
                skipped.append(f"{where}: skipped {other}: not a {KIND}")
            continue
        try:
            experiment = load_experiment_object(document, where)
            problems = expectation_problems(experiment.metadata.annotations)
            if problems:
                raise InvalidExperiment(problems, where)
            experiments.append(experiment)
        except InvalidExperiment as error:
            failures.append((number, error))
    if len(failures) == 1:
        raise failures[0][1]
    if failures:
        problems = [
            (f"#{number} {path}", reason)
            for number, error in failures
            for path, reason in error.problems
        ]
        raise InvalidExperiment(problems, source)
    return experiments


def load_experiment_object(document: object, source: str = "<object>") -> Experiment:
    """Validate one parsed document (a dict, e.g. a CR body from the API server)."""
    if not isinstance(document, Mapping):
        kind = "a list" if isinstance(document, list) else f"a {type(document).__name__}"
        raise InvalidExperiment(
            [
                (
                    DOCUMENT,
                    f"an experiment must be a mapping (apiVersion, kind, metadata, spec), "
                    f"not {kind}",
                )
            ],
            source,
        )
    try:
        return Experiment.model_validate(dict(document))
    except ValidationError as error:
        raise InvalidExperiment(problems_of(error), source) from None


def problems_of(error: ValidationError) -> list[tuple[str, str]]:
    """``(field path, reason)`` for each error pydantic found, in document order."""
    problems: list[tuple[str, str]] = []
    for detail in error.errors(include_url=False):
        problem = (_path(detail), _reason(detail))
        if problem not in problems:
            problems.append(problem)
    return problems


def _path(detail: ErrorDetails) -> str:
    parts: list[str | int] = [part for part in detail["loc"] if part != "[key]"]
    context = detail.get("ctx") or {}
    if "at" in context:
        parts.append(str(context["at"]))
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _IDENTIFIER.match(part):
            text += f".{part}" if text else part
        else:
            text += f"[{part!r}]"
    return text


def _reason(detail: ErrorDetails) -> str:
    kind = detail["type"]
    context = detail.get("ctx") or {}
    if kind == "spec":
        return str(context["reason"])
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field (check the spelling; fields are camelCase)"
    if kind in ("literal_error", "enum"):
        return f"must be one of {context.get('expected', '')} (got {detail['input']!r})"
    if kind == "greater_than_equal":
        return f"must be at least {context['ge']} (got {detail['input']!r})"
    if kind == "less_than_equal":
        return f"must be at most {context['le']} (got {detail['input']!r})"
    if kind == "string_pattern_mismatch":
        if context["pattern"] == DNS1123_SUBDOMAIN:
            return (
                f"{detail['input']!r} is not a valid Kubernetes name: lower case letters, "
                "digits, '-' and '.', starting and ending with a letter or digit"
            )
        if context["pattern"] == DNS1123_LABEL:
            return (
                f"{detail['input']!r} is not a valid namespace: lower case letters, "
                "digits and '-', starting and ending with a letter or digit"
            )
        return f"{detail['input']!r} does not match {context['pattern']}"
    if kind in _TYPE_NAMES:
        return f"must be {_TYPE_NAMES[kind]} (got {detail['input']!r})"
    if kind in ("model_type", "dict_type"):
        return f"must be a mapping (got {type(detail['input']).__name__})"
    if kind == "list_type":
        return f"must be a list (got {type(detail['input']).__name__})"
    message = detail["msg"]
    if message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    return message[:1].lower() + message[1:]


def _yaml_reason(error: yaml.YAMLError, text: str) -> str:
    problem = getattr(error, "problem", None) or str(error)
    context = getattr(error, "context", None)
    position = _yaml_position(error, text)
    if position is None:
        return f"YAML syntax error: {f'{context}, {problem}' if context else problem}"
    line, column = position
    context_mark = getattr(error, "context_mark", None)
    if context and context_mark is not None and int(context_mark.line) + 1 < line:
        began = f"line {int(context_mark.line) + 1}, column {int(context_mark.column) + 1}"
        context = f"{context} begun at {began}"
    detail = f"{context}, {problem}" if context else problem
    return f"YAML syntax error at line {line}, column {column}: {detail}"


def _yaml_position(error: yaml.YAMLError, text: str) -> tuple[int, int] | None:
    """Line and column (from 1) of the mistake, where a person would look for it.

    PyYAML marks where it noticed the problem, which is often a line too far: at the end of
    the text for an unclosed bracket or quote, at the next line for a key without ``:``.
    A token that never ended is shown where it began; a problem found at the end of the text
    is shown at its last character.
    """
    mark = getattr(error, "problem_mark", None)
    if mark is None:
        return None
    context_mark = getattr(error, "context_mark", None)
    context = getattr(error, "context", None) or ""
    if context_mark is not None and context.startswith("while scanning"):
        mark = context_mark
    index = int(getattr(mark, "index", -1))
    if 0 <= index <= len(text) and not text[index:].strip():
        last = len(text.rstrip()) - 1
        if last >= 0:
            line_start = text.rfind("\n", 0, last) + 1
            return text.count("\n", 0, last) + 1, last - line_start + 1
    return int(mark.line) + 1, int(mark.column) + 1
