"""Load experiments from YAML (files, text, CR bodies) and report every problem at once.

Called by the CLI (``pggit-chaos run|validate``), the operator (a CR body) and the tests.
Whatever goes wrong — YAML syntax, a non-mapping document, a bad field — ends up as one
:class:`~pggit_chaos.errors.InvalidExperiment` listing ``(field path, reason)`` pairs, e.g.
``("spec.fault.cpuThrottle.cpuPercent", "must be at least 1")``; never a traceback.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from pggit_chaos.errors import InvalidExperiment
from pggit_chaos.spec.model import DNS1123_LABEL, DNS1123_SUBDOMAIN, Experiment

__all__ = ["DOCUMENT", "load_experiment_object", "load_experiments", "load_experiments_text"]

#: The "field path" of a problem with a whole document (YAML syntax, not a mapping, ...).
DOCUMENT = "(document)"

_TYPE_NAMES = {
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "int_from_float": "an integer",
}
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def load_experiments(path: str | Path) -> list[Experiment]:
    """Every experiment of a YAML file (one or many ``---`` documents; empty ones skipped)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidExperiment([(DOCUMENT, f"cannot read the file: {error}")], str(path)) from None
    return load_experiments_text(text, str(path))


def load_experiments_text(text: str, source: str = "<text>") -> list[Experiment]:
    """Every experiment of YAML ``text``; ``source`` names it in errors (``file#2``).

    All documents are checked before anything is raised. With one invalid document the
    error's source is ``file#N``; with several it is ``file`` and each path starts with the
    document number (``#2 spec.duration``).
    """
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as error:
        raise InvalidExperiment([(DOCUMENT, _yaml_reason(error))], source) from None
    if not documents:
        raise InvalidExperiment([(DOCUMENT, "no experiment in the file (it is empty)")], source)
    many = len(documents) > 1
    experiments: list[Experiment] = []
    failures: list[tuple[int, InvalidExperiment]] = []
    for number, document in enumerate(documents, start=1):
        where = f"{source}#{number}" if many else source
        try:
            experiments.append(load_experiment_object(document, where))
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


def _yaml_reason(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    context = getattr(error, "context", None)
    detail = f"{context}, {problem}" if context else problem
    if mark is None:
        return f"YAML syntax error: {detail}"
    return f"YAML syntax error at line {mark.line + 1}, column {mark.column + 1}: {detail}"
