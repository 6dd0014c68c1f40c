"""The one error tree of pggit-chaos, and the one way a command prints an error.

Every module raises a subclass of :class:`ChaosError`. The operator maps
:class:`InvalidExperiment` to a permanent error and :class:`TargetUnavailable` to a temporary
one. Every command of the CLI (``run``, ``validate``, ``checks``, ``install-pggit``,
``cleanup``, ``crd``) prints an error with :func:`error_lines`: on stderr, one line per problem,
``pggit-chaos: error: <what went wrong, naming the file or field>: <what to do>``, and exits 2.
This module imports nothing heavy: the CLI loads it before anything else.
"""

from __future__ import annotations

#: Name of the console script, the first word of every error line.
PROG = "pggit-chaos"
#: Exit code of every error (invalid input, unreachable target, missing privileges, ...).
EXIT_ERROR = 2
#: The "field path" of a problem with a whole document (YAML syntax, not a mapping, ...).
DOCUMENT = "(document)"


class ChaosError(Exception):
    """Root of every error pggit-chaos raises on purpose."""


class ConfigurationError(ChaosError):
    """A setting (environment variable, option) has a bad value."""


class InvalidExperiment(ChaosError):
    """An experiment document is invalid; ``problems`` lists (field path, reason)."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "") -> None:
        self.problems = problems
        self.source = source
        lines = [problem_line(source, path, reason) for path, reason in problems]
        super().__init__("\n".join(lines or [problem_line(source, "", "invalid experiment")]))

    def lines(self) -> list[str]:
        """One line per problem: ``file: field: reason``."""
        return str(self).splitlines()


class MissingDependency(ChaosError):
    """A program or package the run needs is not installed; the message names it."""


class TargetUnavailable(ChaosError):
    """The database cannot be reached or lacks pgGit."""


class PgGitDefect(ChaosError):
    """The installed pgGit cannot do what every run needs (its call fails with an SQL error
    while the database answers): a finding about pgGit, so the run fails, naming it."""


class NoTargets(ChaosError):
    """Nothing to hit (a selector that matches no Running and Ready pod): the run is Aborted."""


class InsufficientPrivileges(ChaosError):
    """A fault needs privileges (root, CAP_NET_ADMIN, cgroup write access) the user lacks."""


class FaultError(ChaosError):
    """Injecting or reverting a fault failed."""


def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines, tabs) made one space."""
    return " ".join(str(text).split())


def problem_where(source: str, path: str) -> str:
    """``file: field`` of a problem; the whole-document marker :data:`DOCUMENT` is left out."""
    path = path.removesuffix(DOCUMENT).strip()
    return ": ".join(part for part in (source, path) if part)


def problem_line(source: str, path: str, reason: str) -> str:
    """``file: field: reason`` on one line (``file: reason`` for a whole-document problem)."""
    return ": ".join(part for part in (problem_where(source, path), one_line(reason)) if part)


def error_line(message: object) -> str:
    """``pggit-chaos: error: <message>`` on one line."""
    return f"{PROG}: error: {one_line(message)}"


def message_of(error: BaseException) -> str:
    """What went wrong, on one line, never a repr (for error lines and journal reasons).

    A :class:`ChaosError` says what went wrong and what to do; anything else is a defect of
    pggit-chaos, named by its type and message (no traceback) with a request to report it.
    """
    if isinstance(error, ChaosError):
        return one_line(error) or type(error).__name__
    detail = one_line(error)
    what = f"{type(error).__name__}: {detail}" if detail else type(error).__name__
    return (
        f"internal error ({what}): this is a bug in pggit-chaos, please report it with the "
        "command that caused it (PGGIT_CHAOS_DEBUG=1 prints the traceback)"
    )


def error_lines(error: BaseException) -> list[str]:
    """The lines a command prints on stderr for ``error``: one per problem."""
    if isinstance(error, InvalidExperiment):
        return [error_line(line) for line in error.lines()]
    return [error_line(message_of(error))]
