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
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pggit_chaos.checks.names import (
    CATEGORIES,
    ENV_DESTRUCTIVE,
    ENV_DSN,
    ENV_PROFILE,
    ENV_REPORT,
    ENV_RUN_ID,
    LOCK_TIMEOUT_MS,
    PROFILES,
    SCRATCH_PREFIX,
    STATEMENT_TIMEOUT_MS,
    application_name,
    run_prefix,
)
from pggit_chaos.errors import ChaosError, ConfigurationError, TargetUnavailable

if TYPE_CHECKING:
    import psycopg

    from pggit_chaos.sweep import Footprint, Snapshot

# psycopg, the sweep and pgGit's client are imported where used: `checks --help` and a bad
# option answer before they load.

#: Exit codes of ``pggit-chaos checks``: every check passed (or differs), a check failed,
#: unusable input, a check could not run (inconclusive: neither Pass nor Fail).
EXIT_PASS, EXIT_FAIL, EXIT_UNUSABLE, EXIT_INCONCLUSIVE = 0, 1, 2, 3


@dataclass
class CheckOutcome:
    """One check's outcome: passed, failed, error (could not run), differs or skipped."""

    name: str
    outcome: str
    duration: float
    categories: list[str] = field(default_factory=list)
    nodeid: str = ""
    reason: str = ""
    examples: int = 0


@dataclass
class CheckFailure:
    """A check that failed (a promise broken) or errored (could not run), with its evidence.

    ``message`` is the assertion (the rows or values seen) or the error; ``seed`` replays the
    run, ``example`` is hypothesis' shrunk input.
    """

    name: str
    message: str
    seed: int
    example: str = ""
    outcome: str = "failed"


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
    errors: int = 0
    differs: int = 0
    #: The pgGit the checks found (shape, version, event triggers, what it lacks).
    target: str = ""
    #: What the run changed in the target and could not undo (see :func:`sweep.residue`).
    residue: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_PASS

    @property
    def verdict(self) -> str:
        """Fail on any fail; otherwise Inconclusive on any error; otherwise Pass."""
        if self.failed:
            return "Fail"
        return "Inconclusive" if self.errors else "Pass"

    def settle(self) -> None:
        """Recount fails and errors from ``failures`` and set the exit code from them."""
        self.failed = sum(f.outcome == "failed" for f in self.failures)
        self.errors = sum(f.outcome == "error" for f in self.failures)
        self.exit_code = {"Fail": EXIT_FAIL, "Inconclusive": EXIT_INCONCLUSIVE}.get(
            self.verdict, EXIT_PASS
        )

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
        # Plugin autoload is off in the child (child_environment): only these two, so that
        # whatever else is installed beside us (pytest-randomly, xdist, ...) changes nothing.
        "-p",
        HYPOTHESIS_PLUGIN,
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


#: Hypothesis's pytest plugin (its ``pytest11`` entry point): ``--hypothesis-seed`` is its.
HYPOTHESIS_PLUGIN = "_hypothesis_pytestplugin"


def child_environment(base: Mapping[str, str]) -> dict[str, str]:
    """The checks' pytest runs in an environment of our making: the caller's, without any
    ``PYTEST_*`` variable (a user's ``PYTEST_ADDOPTS`` such as ``-x`` or ``--basetemp``, their
    ``PYTEST_PLUGINS``, a ``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` of their own, the variables of a
    pytest or xdist worker we run inside) and with plugin autoload off."""
    env = {key: value for key, value in base.items() if not key.startswith("PYTEST_")}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return env


def _terminate(process: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _end_sessions(conn: psycopg.Connection[Any], run_id: str) -> None:
    """End a run's sessions other than ``conn`` (a killed suite's backends outlive it)."""
    name = application_name(run_id)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        alive = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchone()
        if not alive or not alive[0]:
            return
        time.sleep(0.05)


class _Lease:
    """A session that says "this run is alive" (see :func:`sweep_dead_runs`), and audits.

    On entry: ends nothing, sweeps dead runs, counts the rows naming any scratch prefix. On
    exit (after the suite, also after a kill or timeout): ends the run's leftover sessions,
    purges everything named by the run's prefix, and audits — any row naming a scratch prefix
    that was not there before is a leftover, reported as an error of the tool.
    """

    def __init__(self, dsn: str, run_id: str) -> None:
        self.dsn, self.run_id = dsn, run_id
        self.conn: psycopg.Connection[Any] | None = None
        self.swept: list[str] = []
        self.before: Footprint | None = None
        self.baseline: Snapshot | None = None
        self.residue: list[str] = []

    def __enter__(self) -> _Lease:
        import psycopg

        from pggit_chaos import sweep
        from pggit_chaos.pggit import describe_target

        try:
            self.conn = self._connect()
            from pggit_chaos.target_cleanup import sweep_dead_runs

            self.swept = sweep_dead_runs(self.conn)
            self.before = sweep.audit(self.conn, SCRATCH_PREFIX)
            self.baseline = sweep.snapshot(self.conn)
        except psycopg.Error as exc:
            if self.conn is not None:
                self.conn.close()
            raise TargetUnavailable(
                f"preparing the checks in {describe_target(self.dsn)} failed: "
                + " ".join(str(exc).split())
            ) from None
        return self

    def _connect(self) -> psycopg.Connection[Any]:
        import psycopg

        conn = psycopg.connect(
            self.dsn,
            autocommit=True,
            connect_timeout=10,
            application_name=application_name(self.run_id),
        )
        conn.execute(  # a locked pgGit table makes the run fail, not hang
            "SELECT set_config('lock_timeout', %s, false),"
            " set_config('statement_timeout', %s, false)",
            (str(LOCK_TIMEOUT_MS), str(10 * STATEMENT_TIMEOUT_MS)),
        )
        return conn

    def _reopen_if_lost(self) -> None:
        """A new session when the server lost this one (a check crashed a backend and the
        server restarted them all): wait up to a minute for it to accept connections."""
        import psycopg

        if self.conn is not None and not self.conn.closed:
            try:
                self.conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                self.conn.close()
        deadline = time.monotonic() + 60
        while True:
            try:
                self.conn = self._connect()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def close(self) -> str:
        """Clean up and audit; returns '' or what was left behind."""
        from pggit_chaos import sweep

        if self.conn is None:
            return ""
        self._reopen_if_lost()
        conn = self.conn
        assert conn is not None
        try:
            _end_sessions(conn, self.run_id)
            sweep.purge(conn, run_prefix(self.run_id))
            if self.baseline is not None:
                self.residue = sweep.residue(self.baseline, sweep.snapshot(conn))
            after = sweep.audit(conn, SCRATCH_PREFIX)
            before = self.before.rows if self.before else {}
            grown = {t: n - before.get(t, 0) for t, n in after.rows.items() if n > before.get(t, 0)}
            new_schemas = sorted(
                set(after.schemas) - set(self.before.schemas if self.before else [])
            )
            parts = [f"pggit.{t}: {n} rows" for t, n in sorted(grown.items())]
            parts += [f"schema {name}" for name in new_schemas]
            new_roles = sorted(set(after.roles) - set(self.before.roles if self.before else []))
            parts += [f"role {name}" for name in new_roles]
            return ", ".join(parts)
        finally:
            conn.close()
            self.conn = None

    def __exit__(self, *exc: object) -> None:
        if self.conn is not None:
            self.conn.close()


def describe_pggit(dsn: str) -> str:
    """One line: the installed pgGit's shape, version, event triggers and what it lacks."""
    import psycopg

    from pggit_chaos.pggit import capabilities

    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        return capabilities(conn).describe()


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
    announce: bool = False,
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
    import psycopg

    from pggit_chaos.pggit import connect_check

    connect_check(dsn)
    if announce:  # which pgGit, before anything runs
        print(f"pgGit under check: {describe_pggit(dsn)}", flush=True)
    seed = seed if seed is not None else secrets.randbelow(2**32)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pggit-chaos-checks-") as tmp:
        work = Path(tmp)
        # pytest's rootdir is the working folder; an ini file of ours there ends pytest's
        # search upwards (an ini in a folder above TMPDIR is not the checks').
        (work / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
        report_path = work / "report.json"
        junit_path = Path(junit).resolve() if junit else work / "junit.xml"
        junit_path.parent.mkdir(parents=True, exist_ok=True)
        run_id = secrets.token_hex(4)
        env = child_environment(os.environ)
        env.update(
            {
                ENV_RUN_ID: run_id,
                ENV_DSN: dsn,
                ENV_PROFILE: profile,
                ENV_REPORT: str(report_path),
                ENV_DESTRUCTIVE: "1" if include_destructive else "0",
                "PYTHONPATH": os.pathsep.join(
                    p for p in (_package_root(), env.get("PYTHONPATH")) if p
                ),
            }
        )
        log_path = work / "pytest.log"
        lease = _Lease(dsn, run_id)
        with lease, open(log_path, "wb") as log:
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
                    leftover = lease.close()
                    sweep_error = f"left behind in the target: {leftover}" if leftover else ""
                except psycopg.Error as exc:
                    sweep_error = "removing scratch areas failed: " + " ".join(str(exc).split())
        report = (
            json.loads(report_path.read_text(encoding="utf-8")) if report_path.exists() else None
        )
        log_tail = log_path.read_text(errors="replace")[-2000:] if quiet else ""
    result = _result(report, returncode, seed, profile, selected, timed_out, timeout, log_tail)
    result.residue = lease.residue
    if sweep_error:
        result.failures.append(CheckFailure("checks-cleanup", sweep_error, seed, outcome="error"))
        result.settle()
    if junit:
        _mark_junit(junit_path, result)
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
                    outcome.name,
                    record.get("message", ""),
                    seed,
                    record.get("example", ""),
                    outcome=outcome.outcome,
                )
            )
    if timed_out:
        failures.append(
            CheckFailure(
                "checks-suite", f"the suite did not finish within {timeout}s", seed, outcome="error"
            )
        )
    elif report is None or returncode not in (0, 1, 5):
        why = f"pytest exited with code {returncode}"
        failures.append(
            CheckFailure(
                "checks-suite", f"{why}: {log_tail.strip()[-500:]}".strip(), seed, outcome="error"
            )
        )
    if report is not None and not timed_out and categories:
        failures += _unrun_categories(checks, categories, seed)
    result = ChecksResult(
        passed=sum(c.outcome == "passed" for c in checks),
        failed=0,
        skipped=sum(c.outcome == "skipped" for c in checks),
        differs=sum(c.outcome == "differs" for c in checks),
        failures=failures,
        checks=checks,
        hypothesis_examples=int((report or {}).get("hypothesis_examples", 0)),
        seed=seed,
        exit_code=EXIT_PASS,
        profile=profile,
        categories=list(categories or CATEGORIES),
        target=str((report or {}).get("target", "")),
    )
    result.settle()
    return result


def _unrun_categories(
    checks: list[CheckOutcome], categories: list[str], seed: int
) -> list[CheckFailure]:
    """An error for each requested category of which no check ran (all skipped, or none).

    A category asked for by name and verified by nothing is no Pass: the verdict says
    Inconclusive (exit 3), with the reasons the checks gave for skipping.
    """
    unrun: list[CheckFailure] = []
    for category in categories:
        members = [c for c in checks if category in c.categories]
        if any(c.outcome != "skipped" for c in members):
            continue
        reasons = list(dict.fromkeys(c.reason for c in members if c.reason))
        why = f" ({'; '.join(reasons)})" if reasons else ""
        message = (
            f"all {len(members)} {category} checks were skipped{why}: nothing verified it"
            if members
            else f"no {category} check was selected: nothing verified it"
        )
        unrun.append(CheckFailure(f"category {category}", message, seed, outcome="error"))
    return unrun


def _mark_junit(path: Path, result: ChecksResult) -> None:
    """Make pytest's JUnit XML say what the checks concluded: ``<error>`` for a check that
    could not run (pytest calls it a failure), ``<skipped type="differs">`` for a difference."""
    import xml.etree.ElementTree as ET

    if not path.exists():
        return
    outcomes = {c.name: c.outcome for c in result.checks}
    tree = ET.parse(path)
    for case in tree.iter("testcase"):
        outcome = outcomes.get(case.get("name", ""))
        failure = case.find("failure")
        if outcome == "error" and failure is not None:
            failure.tag = "error"
        skipped = case.find("skipped")
        if outcome == "differs" and skipped is not None:
            skipped.set("type", "differs")
    for suite in tree.iter("testsuite"):
        cases = list(suite.iter("testcase"))
        suite.set("failures", str(sum(c.find("failure") is not None for c in cases)))
        suite.set("errors", str(sum(c.find("error") is not None for c in cases)))
    tree.write(path, encoding="utf-8", xml_declaration=True)


# -- command line ------------------------------------------------------------------------------


class _UsageError(Exception):
    """A bad command line (argparse's complaint, kept to one line)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pggit-chaos checks",
        description=(
            "Run the pgGit verification checks (pytest + hypothesis) against a database: the "
            "embedded core or upstream pgGit, whichever is installed (said first). Each check "
            "passes, fails (a promise broken, with evidence), errors (could not run), differs "
            "(a documented behaviour of that pgGit) or is skipped (what it needs is missing). "
            "Checks work in scratch schemas and leave the database's pgGit rows as found."
        ),
        epilog=(
            "examples:\n"
            "  pggit-chaos checks\n"
            "  pggit-chaos checks --dsn postgresql://postgres@db/app --category corruption\n"
            "  pggit-chaos checks --dsn URL --profile dev --junit checks.xml --seed 4269135873\n"
            "\nexit codes: 0 Pass, 1 Fail, 2 unusable input, 3 Inconclusive (a check could not"
            " run, or every check of a --category asked for was skipped)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--dsn", default=os.environ.get("PGGIT_CHAOS_DSN") or None,
        help="target database (default: PGGIT_CHAOS_DSN, else a fresh embedded PostgreSQL "
        "with pgGit)",
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
    parser.add_argument(
        "--hand-back", metavar="NAMESPACE/CONFIGMAP",
        help="in a verification Job: write the results as the termination message and into "
        "this ConfigMap (owned by the experiment PGGIT_CHAOS_EXPERIMENT)",
    )
    return parser


def print_verdict(result: ChecksResult, target: str) -> None:
    """The verdict table (rich): each check's outcome, then every fail and error with its
    evidence, seed and shrunk example, then one line with the five outcomes."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # a log (CI, a Job): room for whole check names
        console = Console(width=160)
    table = Table(title=f"pgGit checks against {target}", show_lines=False)
    table.add_column("check", no_wrap=True)
    table.add_column("category")
    table.add_column("outcome", overflow="fold")
    table.add_column("seconds", justify="right")
    table.add_column("examples", justify="right")
    styles = {
        "passed": "green",
        "failed": "bold red",
        "error": "bold magenta",
        "skipped": "yellow",
        "differs": "cyan",
    }
    for check in result.checks:
        outcome = f"{check.outcome}: {check.reason}" if check.reason else check.outcome
        table.add_row(
            check.name,
            ",".join(c for c in check.categories if c in CATEGORIES),
            f"[{styles.get(check.outcome, '')}]{escape(outcome)}[/]",
            f"{check.duration:.2f}",
            str(check.examples or ""),
        )
    console.print(table)
    for failure in result.failures:
        label = "FAILED" if failure.outcome == "failed" else "ERROR (could not run)"
        console.print(
            f"[bold red]{label}[/] {escape(failure.name)}: {escape(failure.message)}",
            highlight=False,
        )
        if failure.example:
            console.print(failure.example, markup=False, highlight=False)
    if result.residue:
        console.print(
            "[yellow]left in the target (no sweep can undo it):[/] "
            + escape("; ".join(result.residue)),
            highlight=False,
        )
    verdict = {
        "Pass": "[bold green]PASS[/]",
        "Fail": "[bold red]FAIL[/]",
        "Inconclusive": "[bold magenta]INCONCLUSIVE[/] (a check could not run)",
    }[result.verdict]
    console.print(
        f"{verdict}: {result.passed} passed, {result.failed} failed, {result.errors} errors, "
        f"{result.differs} differ, {result.skipped} skipped; "
        f"{result.hypothesis_examples} hypothesis examples; profile {result.profile}; "
        f"seed {result.seed} (replay with --seed {result.seed}); {result.duration:.1f}s",
        highlight=False,
    )


def main(argv: list[str] | None = None) -> int:
    """``pggit-chaos checks``: 0 pass, 1 a check failed, 2 unusable input, 3 inconclusive."""
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
            "announce": True,
        }
        if args.dsn:
            from pggit_chaos.pggit import describe_target

            result = run_checks(args.dsn, **options)
            target = describe_target(args.dsn)
        else:
            from pggit_chaos.config import load_settings
            from pggit_chaos.local.process import recorded_embedded_pggit
            from pggit_chaos.local.state import StateFile

            started = time.monotonic()
            state = StateFile.in_dir(load_settings().state_dir)
            with recorded_embedded_pggit(state, "throwaway cluster of pggit-chaos checks") as (
                    _server, dsn):
                from pggit_chaos.checks.amcheck import create_amcheck

                create_amcheck(dsn)  # a throwaway database: ours to add amcheck to
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
    if args.hand_back:
        from pggit_chaos.config import load_settings
        from pggit_chaos.kube.handback import hand_back

        for problem in hand_back(result.to_dict(), args.hand_back, load_settings()):
            print(f"{prog}: warning: could not hand back: {problem}", file=sys.stderr)
    return result.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
