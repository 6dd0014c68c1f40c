"""What outcome an experiment expects, from annotations on its metadata, and the comparison.

Read by the loader (a bad value is an invalid file, refused before anything runs), by
``pggit-chaos run`` (its summary table, combined JUnit and exit code) and by ``scripts/kind-e2e``
(through :func:`judge_main`, with the phases and messages it read from the cluster). The
operator does not act on them: they are annotations, not spec fields, for that reason.

The annotations (all optional; without them an experiment expects ``Passed``)::

    chaos.pggit.io/expect: "Failed: test_pggit_btree_indexes_pass_amcheck"
    chaos.pggit.io/expect-in-cluster: "Aborted: refused by the destructive gate"
    chaos.pggit.io/skip-when-in-cluster: |
      Aborted: carries the primary label

An outcome is a terminal phase (:data:`OUTCOMES`), optionally followed by ``:`` and a text the
run's reason (locally the journal's reason, in a cluster ``status.message``) must contain.
``expect`` names the one outcome that counts as success; ``skip-when`` one outcome per line
that is reported as skipped (neither success nor failure), each with the text that identifies
it. The ``-in-cluster`` key, when given, replaces its plain key for a run in a cluster.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pggit_chaos.spec.model import GROUP, Experiment

__all__ = [
    "ANNOTATIONS",
    "EXPECT",
    "EXPECT_IN_CLUSTER",
    "OUTCOMES",
    "SKIP_WHEN",
    "SKIP_WHEN_IN_CLUSTER",
    "Expectation",
    "Judgement",
    "Outcome",
    "Result",
    "expectation_of",
    "expectation_problems",
    "judge_main",
]

EXPECT = f"{GROUP}/expect"
EXPECT_IN_CLUSTER = f"{GROUP}/expect-in-cluster"
SKIP_WHEN = f"{GROUP}/skip-when"
SKIP_WHEN_IN_CLUSTER = f"{GROUP}/skip-when-in-cluster"
ANNOTATIONS = (EXPECT, EXPECT_IN_CLUSTER, SKIP_WHEN, SKIP_WHEN_IN_CLUSTER)
#: The terminal phases: what a run can end in, locally and in a cluster.
OUTCOMES = ("Passed", "Failed", "Inconclusive", "Aborted", "Error")
#: Annotation keys that look like one of ours (a misspelt key is an error, not ignored).
_OURS = (f"{GROUP}/expect", f"{GROUP}/skip")


@dataclass(frozen=True)
class Outcome:
    """A terminal phase, and a text the run's reason must contain (empty: any reason)."""

    phase: str
    text: str = ""

    def matches(self, phase: str, reason: str) -> bool:
        return phase == self.phase and self.text in reason

    def __str__(self) -> str:
        return f"{self.phase} ({self.text})" if self.text else self.phase


class Result(StrEnum):
    """How a run's outcome compares with its expectation."""

    met = "as expected"
    skipped = "skipped"
    unexpected = "UNEXPECTED"


@dataclass(frozen=True)
class Judgement:
    """One run judged: the result, what was expected, what it got and why."""

    result: Result
    expected: Outcome
    got: str
    reason: str

    @property
    def ok(self) -> bool:
        """Met or skipped: nothing to fail the run for."""
        return self.result is not Result.unexpected


@dataclass(frozen=True)
class Expectation:
    """The outcome that counts as success on one substrate, and the outcomes skipped there."""

    expected: Outcome = Outcome("Passed")
    skips: tuple[Outcome, ...] = ()

    def judge(self, phase: str, reason: str) -> Judgement:
        if self.expected.matches(phase, reason):
            result = Result.met
        elif any(skip.matches(phase, reason) for skip in self.skips):
            result = Result.skipped
        else:
            result = Result.unexpected
        return Judgement(result, self.expected, phase, reason)


def _parse(value: str, *, text_required: bool) -> Outcome | None:
    phase, colon, text = value.strip().partition(":")
    phase, text = phase.strip(), text.strip()
    if phase not in OUTCOMES or (colon and not text) or (text_required and not text):
        return None
    return Outcome(phase, text)


def _where(key: str) -> str:
    return f"metadata.annotations[{key!r}]"


def expectation_problems(annotations: Mapping[str, str]) -> list[tuple[str, str]]:
    """``(field path, reason)`` for each bad outcome annotation (empty: all good)."""
    allowed = ", ".join(OUTCOMES)
    problems: list[tuple[str, str]] = []
    for key, value in annotations.items():
        if key in (EXPECT, EXPECT_IN_CLUSTER):
            if _parse(value, text_required=False) is None:
                problems.append((_where(key), (
                    f"must be one of {allowed}, optionally followed by ': ' and a text the "
                    f"run's reason must contain (got {value!r})")))
        elif key in (SKIP_WHEN, SKIP_WHEN_IN_CLUSTER):
            lines = [line for line in value.splitlines() if line.strip()]
            bad = [line for line in lines if _parse(line, text_required=True) is None]
            if bad or not lines:
                problems.append((_where(key), (
                    f"one outcome per line, each one of {allowed} followed by ': ' and the text "
                    f"of the reason that identifies it (got {(bad or [value])[0]!r})")))
        elif key.startswith(_OURS):
            problems.append((_where(key), (
                f"unknown annotation (the outcome annotations are {', '.join(ANNOTATIONS)})")))
    return problems


def expectation_of(experiment: Experiment, *, in_cluster: bool) -> Expectation:
    """The experiment's expectation on one substrate (default: ``Passed``, nothing skipped).

    The annotations are validated by the loader; a value that does not parse counts as not
    given here.
    """
    annotations = experiment.metadata.annotations
    expect = annotations.get(EXPECT_IN_CLUSTER) if in_cluster else None
    expect = expect if expect is not None else annotations.get(EXPECT)
    skips = annotations.get(SKIP_WHEN_IN_CLUSTER) if in_cluster else None
    skips = skips if skips is not None else annotations.get(SKIP_WHEN, "")
    expected = _parse(expect, text_required=False) if expect is not None else None
    parsed = (_parse(line, text_required=True) for line in skips.splitlines() if line.strip())
    return Expectation(expected or Outcome("Passed"),
                       tuple(skip for skip in parsed if skip is not None))


def judge_main(argv: Sequence[str]) -> int:
    """``scripts/kind-e2e``'s comparison: ``FILE|DIR OUTCOMES`` -> one line per experiment.

    ``OUTCOMES`` holds one line per experiment run in a cluster: namespace, name, phase and
    ``status.message``, separated by tabs. For each it prints ``RESULT``, ``ns/name``, the phase,
    the expected outcome and the message, separated by tabs (RESULT: ``ok``, ``skipped`` or
    ``FAIL``). Exit 0 (also with a FAIL line:
    the script counts them), 2 when the experiment files are invalid (one line each on stderr).
    """
    from pggit_chaos.errors import InvalidExperiment, error_line
    from pggit_chaos.spec.loader import load_paths

    if len(argv) != 2:
        print(error_line("usage: judge FILE|DIR OUTCOMES"), file=sys.stderr)
        return 2
    try:
        experiments = load_paths([argv[0]])
    except InvalidExperiment as error:
        for line in error.lines():
            print(error_line(line), file=sys.stderr)
        return 2
    expectations = {(e.namespace, e.name): expectation_of(e, in_cluster=True)
                    for e in experiments}
    words = {Result.met: "ok", Result.skipped: "skipped", Result.unexpected: "FAIL"}
    for line in Path(argv[1]).read_text(encoding="utf-8").splitlines():
        namespace, name, phase, message = ([*line.split("\t"), "", "", "", ""])[:4]
        if not name:
            continue
        expectation = expectations.get((namespace, name), Expectation())
        judgement = expectation.judge(phase, message)
        print("\t".join((words[judgement.result], f"{namespace}/{name}", phase,
                         str(judgement.expected), " ".join(message.split()))))
    return 0
