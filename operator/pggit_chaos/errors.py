"""The one error tree of pggit-chaos; boundaries (CLI, kopf) translate it.

Every module raises a subclass of :class:`ChaosError`. The CLI prints ``str(error)`` on one
line and exits 2; the operator maps :class:`InvalidExperiment` to a permanent error and
:class:`TargetUnavailable` to a temporary one.
"""

from __future__ import annotations


class ChaosError(Exception):
    """Root of every error pggit-chaos raises on purpose."""


class ConfigurationError(ChaosError):
    """A setting (environment variable, option) has a bad value."""


class InvalidExperiment(ChaosError):
    """An experiment document is invalid; ``problems`` lists (field path, reason)."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "") -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        lines = [f"{where}{path}: {reason}" for path, reason in problems]
        super().__init__("\n".join(lines) if lines else f"{where}invalid experiment")


class MissingDependency(ChaosError):
    """A program or package the run needs is not installed; the message names it."""


class TargetUnavailable(ChaosError):
    """The database cannot be reached or lacks pgGit."""


class InsufficientPrivileges(ChaosError):
    """A fault needs privileges (root, CAP_NET_ADMIN, cgroup write access) the user lacks."""


class FaultError(ChaosError):
    """Injecting or reverting a fault failed."""
