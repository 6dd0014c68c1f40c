"""Run the checks suite in a pytest subprocess and turn its report into a :class:`ChecksResult`.

Called by verification Jobs and the engine (:func:`run_checks`) and by the CLI
(``pggit-chaos checks``, wired to :func:`main`). The suite runs as
``python -m pytest --pyargs pggit_chaos.checks`` with the DSN in the environment, the chosen
hypothesis profile and an explicit ``--hypothesis-seed`` (random unless given) so every report
names the seed that replays it. Results come back through the suite's JSON report; JUnit XML
is written by pytest itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import psycopg

from pggit_chaos.checks.support import (
    CATEGORIES,
    ENV_DESTRUCTIVE,
    ENV_DSN,
    ENV_JOURNAL,
    ENV_PROFILE,
    ENV_REPORT,
    ENV_RUN_ID,
    PROFILES,
    application_name,
    cleanup_tokens,
)
from pggit_chaos.errors import ChaosError, ConfigurationError

#: Exit codes of ``pggit-chaos checks``.
EXIT_PASS, EXIT_FAIL, EXIT_UNUSABLE = 0, 1, 2


@dataclass
class CheckOutcome:
    """One check's outcome: passed, failed, error (setup/teardown) or skipped."""

    name: str
    outcome: str
    duration: float
    categories: list[str] = field(default_factory=list)
    nodeid: str = ""
    reason: str = ""
    examples: int = 0


@dataclass
class CheckFailure:
    """A failed check: its assertion message, the run's seed and hypothesis' shrunk example."""

    name: str
    message: str
    seed: int
    example: str = ""


@dataclass
class ChecksResult:
    """The verdict of one checks run."""

    passed: int
    failed: int
    skipped: int
    failures: list[CheckFailure]
    checks: list[CheckOutcome]
    hypothesis_examples: int
    seed: int
    exit_code: int
    profile: str = "ci"
    categories: list[str] = field(default_factory=list)
    duration: float = 0.0
    junit: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_PASS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_categories(value: str | Sequence[str] | None) -> list[str] | None:
    """``"property,corruption"`` (or a list) -> validated category names; None = all."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else [p for v in value for p in v.split(",")]
    names = [item.strip() for item in items if item.strip()]
    unknown = [name for name in names if name not in CATEGORIES]
    if unknown:
        raise ConfigurationError(
            f"unknown check category {', '.join(map(repr, unknown))}: "
            f"choose from {', '.join(CATEGORIES)}"
        )
    if not names:
        raise ConfigurationError(f"no check category given: choose from {', '.join(CATEGORIES)}")
    return list(dict.fromkeys(names))


def _package_root() -> str:
    import pggit_chaos

    return str(Path(pggit_chaos.__file__).resolve().parent.parent)


def _pytest_command(
    categories: list[str] | None, seed: int, junit: Path, destructive: bool
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "pggit_chaos.checks.plugin",
        "--pyargs",
        "pggit_chaos.checks",
        f"--hypothesis-seed={seed}",
        "-p",
        "no:cacheprovider",
        "-q",
        "-rfE",
        "--junitxml",
        str(junit),
        "-o",
        "junit_family=xunit2",
        "-o",
        "junit_suite_name=pggit-chaos-checks",
    ]
    if categories:
        cmd += ["-m", " or ".join(categories)]
    if destructive:
        cmd.append("--destructive")
    return cmd


def _terminate(process: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _sweep(dsn: str, journal: Path, run_id: str) -> None:
    """End a killed run's orphaned sessions, then clean up the scratch areas it left.

    A no-op after a clean run. Sessions go first: a backend blocked in a statement outlives
    its killed client and would otherwise commit after the cleanup.
    """
    name = application_name(run_id)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            alive = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = %s AND pid <> pg_backend_pid()",
                (name,),
            ).fetchone()
            if not alive or not alive[0]:
                break
            time.sleep(0.05)
        tokens = (
            [t for t in journal.read_text(encoding="utf-8").split() if t]
            if journal.exists() else []
        )
        if not tokens:
            return
        left = [
            t
            for t in tokens
            if conn.execute("SELECT to_regnamespace(%s) IS NOT NULL", (t,)).fetchone() == (True,)
        ]
    cleanup_tokens(dsn, left)


def run_checks(
    dsn: str,
    categories: Sequence[str] | None = None,
    profile: str = "ci",
    junit: Path | None = None,
    json_out: Path | None = None,
    seed: int | None = None,
    include_destructive: bool = False,
    timeout: float | None = None,
    quiet: bool = False,
) -> ChecksResult:
    """Run the selected checks against ``dsn``; exit_code 0 when all pass, 1 otherwise.

    Raises :class:`ConfigurationError` for an unknown category or profile and
    :class:`~pggit_chaos.errors.TargetUnavailable` when ``dsn`` is unreachable or lacks pgGit.
    """
    selected = parse_categories(list(categories)) if categories is not None else None
    if profile not in PROFILES:
        raise ConfigurationError(
            f"unknown hypothesis profile {profile!r}: choose from {', '.join(PROFILES)}"
        )
    from pggit_chaos.pggit import connect_check

    connect_check(dsn)
    seed = seed if seed is not None else secrets.randbelow(2**32)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pggit-chaos-checks-") as tmp:
        work = Path(tmp)
        report_path, journal = work / "report.json", work / "scratch.journal"
        junit_path = Path(junit).resolve() if junit else work / "junit.xml"
        junit_path.parent.mkdir(parents=True, exist_ok=True)
        run_id = secrets.token_hex(6)
        env = dict(os.environ)
        env.update(
            {
                ENV_RUN_ID: run_id,
                ENV_DSN: dsn,
                ENV_PROFILE: profile,
                ENV_REPORT: str(report_path),
                ENV_JOURNAL: str(journal),
                ENV_DESTRUCTIVE: "1" if include_destructive else "0",
                "PYTHONPATH": os.pathsep.join(
                    p for p in (_package_root(), env.get("PYTHONPATH")) if p
                ),
            }
        )
        log_path = work / "pytest.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                _pytest_command(selected, seed, junit_path, include_destructive),
                cwd=work,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log if quiet else None,
                stderr=subprocess.STDOUT if quiet else None,
                start_new_session=True,
            )
            timed_out = False
            try:
                returncode = process.wait(timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                _terminate(process)
                returncode = process.returncode if process.returncode is not None else -9
            except BaseException:
                _terminate(process)
                raise
            finally:
                try:
                    _sweep(dsn, journal, run_id)
                    sweep_error = ""
                except psycopg.Error as exc:
                    sweep_error = " ".join(str(exc).split())
        report = (
            json.loads(report_path.read_text(encoding="utf-8")) if report_path.exists() else None
        )
        log_tail = log_path.read_text(errors="replace")[-2000:] if quiet else ""
    result = _result(report, returncode, seed, profile, selected, timed_out, timeout, log_tail)
    if sweep_error:
        result.failures.append(
            CheckFailure("checks-cleanup", f"removing scratch areas failed: {sweep_error}", seed)
        )
        result.failed, result.exit_code = len(result.failures), EXIT_FAIL
    result.duration = time.monotonic() - started
    result.junit = str(junit_path) if junit else None
    if json_out is not None:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    return result


def _result(
    report: dict[str, Any] | None,
    returncode: int,
    seed: int,
    profile: str,
    categories: list[str] | None,
    timed_out: bool,
    timeout: float | None,
    log_tail: str,
) -> ChecksResult:
    checks: list[CheckOutcome] = []
    failures: list[CheckFailure] = []
    for record in (report or {}).get("checks", []):
        outcome = CheckOutcome(
            name=record["name"],
            outcome=record["outcome"],
            duration=float(record["duration"]),
            categories=list(record.get("markers", [])),
            nodeid=record.get("nodeid", ""),
            reason=record.get("reason", ""),
            examples=int(record.get("examples", 0)),
        )
        checks.append(outcome)
        if outcome.outcome in {"failed", "error"}:
            failures.append(
                CheckFailure(
                    outcome.name, record.get("message", ""), seed, record.get("example", "")
                )
            )
    if timed_out:
        failures.append(
            CheckFailure("checks-suite", f"the suite did not finish within {timeout}s", seed)
        )
    elif report is None or returncode not in (0, 1, 5):
        why = f"pytest exited with code {returncode}"
        failures.append(
            CheckFailure("checks-suite", f"{why}: {log_tail.strip()[-500:]}".strip(), seed)
        )
    passed = sum(c.outcome == "passed" for c in checks)
    skipped = sum(c.outcome == "skipped" for c in checks)
    return ChecksResult(
        passed=passed,
        failed=len(failures),
        skipped=skipped,
        failures=failures,
        checks=checks,
        hypothesis_examples=int((report or {}).get("hypothesis_examples", 0)),
        seed=seed,
        exit_code=EXIT_FAIL if failures else EXIT_PASS,
        profile=profile,
        categories=list(categories or CATEGORIES),
    )


# -- command line ------------------------------------------------------------------------------


class _UsageError(Exception):
    """A bad command line (argparse's complaint, kept to one line)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pggit-chaos checks",
        description="Run the pgGit verification checks (pytest + hypothesis) against a database.",
    )
    parser.add_argument(
        "--dsn", help="target database (default: a fresh embedded PostgreSQL with pgGit)"
    )
    parser.add_argument(
        "--category",
        action="append",
        help=f"comma-separated categories to run (default: all): {', '.join(CATEGORIES)}",
    )
    parser.add_argument(
        "--profile", default=None, help=f"hypothesis profile: {', '.join(PROFILES)} (default ci)"
    )
    parser.add_argument("--junit", type=Path, help="write JUnit XML here")
    parser.add_argument("--json", type=Path, help="write the result as JSON here")
    parser.add_argument("--seed", type=int, help="hypothesis seed (replays a reported run)")
    parser.add_argument("--destructive", action="store_true", help="also run destructive checks")
    parser.add_argument("--timeout", type=float, help="stop the suite after this many seconds")
    parser.add_argument("-v", "--verbose", action="store_true", help="show pytest's own output")
    return parser


def print_verdict(result: ChecksResult, target: str) -> None:
    """A short verdict table (rich) with every failure's message, seed and shrunk example."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"pgGit checks against {target}", show_lines=False)
    for column in ("check", "category", "outcome", "seconds", "examples"):
        table.add_column(column, justify="right" if column in {"seconds", "examples"} else "left")
    styles = {"passed": "green", "failed": "bold red", "error": "bold red", "skipped": "yellow"}
    for check in result.checks:
        outcome = check.outcome if check.outcome != "skipped" else f"skipped: {check.reason}"
        table.add_row(
            check.name,
            ",".join(c for c in check.categories if c in CATEGORIES),
            f"[{styles.get(check.outcome, '')}]{outcome}[/]",
            f"{check.duration:.2f}",
            str(check.examples or ""),
        )
    console.print(table)
    for failure in result.failures:
        console.print(
            f"[bold red]FAILED[/] {failure.name}: {failure.message}", markup=True, highlight=False
        )
        if failure.example:
            console.print(failure.example, markup=False, highlight=False)
    verdict = "[bold green]PASS[/]" if result.ok else "[bold red]FAIL[/]"
    console.print(
        f"{verdict}: {result.passed} passed, {result.failed} failed, {result.skipped} skipped; "
        f"{result.hypothesis_examples} hypothesis examples; profile {result.profile}; "
        f"seed {result.seed} (replay with --seed {result.seed}); {result.duration:.1f}s",
        highlight=False,
    )


def main(argv: list[str] | None = None) -> int:
    """``pggit-chaos checks``: 0 all pass, 1 a check failed, 2 unusable input (one line)."""
    prog = "pggit-chaos checks"
    try:
        args = _parser().parse_args(argv)
        categories = parse_categories(args.category)
        profile = args.profile or os.environ.get(ENV_PROFILE) or "ci"
        if profile not in PROFILES:
            raise ConfigurationError(
                f"unknown hypothesis profile {profile!r}: choose from {', '.join(PROFILES)}"
            )
        options: dict[str, Any] = {
            "categories": categories,
            "profile": profile,
            "junit": args.junit,
            "json_out": args.json,
            "seed": args.seed,
            "include_destructive": args.destructive,
            "timeout": args.timeout,
            "quiet": not args.verbose,
        }
        if args.dsn:
            from pggit_chaos.pggit import describe_target

            result = run_checks(args.dsn, **options)
            target = describe_target(args.dsn)
        else:
            from pggit_chaos.local import embedded_pggit

            started = time.monotonic()
            with embedded_pggit() as (_server, dsn):
                print(f"embedded PostgreSQL with pgGit ready in {time.monotonic() - started:.1f}s")
                result = run_checks(dsn, **options)
            target = "embedded PostgreSQL"
    except _UsageError as exc:
        from pggit_chaos.errors import error_line

        print(error_line(f"{exc}: see `{prog} --help`"), file=sys.stderr)
        return EXIT_UNUSABLE
    except SystemExit as exc:  # --help
        return int(exc.code or 0) if isinstance(exc.code, int | None) else EXIT_UNUSABLE
    except ChaosError as exc:  # worded as every command words it (pggit_chaos.errors)
        from pggit_chaos.errors import error_lines

        for line in error_lines(exc):
            print(line, file=sys.stderr)
        return EXIT_UNUSABLE
    print_verdict(result, target)
    return result.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
