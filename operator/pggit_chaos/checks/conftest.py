"""pytest configuration of the checks suite: profiles, markers, target fixtures, the JSON report.

pytest loads this when it collects ``pggit_chaos.checks`` — started by
:mod:`pggit_chaos.checks.runner` in a subprocess, or by hand::

    PGGIT_CHAOS_DSN=postgresql://... pytest --pyargs pggit_chaos.checks -m property

Settings come from the environment (``PGGIT_CHAOS_DSN``, ``HYPOTHESIS_PROFILE``,
``PGGIT_CHAOS_DESTRUCTIVE=1``, ``PGGIT_CHAOS_CHECKS_REPORT=<json path>``) or, with
``-p pggit_chaos.checks.plugin``, from the options ``--dsn``, ``--destructive``,
``--checks-json``. Replay a run with ``--hypothesis-seed=N``.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pggit_chaos.checks.api import Deviations, PgGitApi
from pggit_chaos.checks.names import CATEGORIES, ENV_DESTRUCTIVE, ENV_DSN, ENV_REPORT
from pggit_chaos.checks.support import (
    Scratch,
    TargetInfo,
    cleanup_scratch,
    connect,
    inspect_target,
    load_profile,
)

PROFILE = load_profile()


_MARKERS = {
    "property": "hypothesis properties of pgGit's functions and DDL tracking",
    "concurrent": "behaviour under concurrent sessions (threads, separate connections)",
    "transaction": "rollback, savepoint and constraint-violation semantics",
    "resource": "large inputs and exhausted resources (wide tables, connection pools)",
    "corruption": "read-only integrity checks over everything pgGit recorded",
    "security": "pgGit's privileges: search_path hijacks, PUBLIC writes, DDL by ordinary roles",
    "slow": "long-running checks",
    "destructive": "needs superuser or disturbs other sessions; runs only with --destructive",
    "requires(*names)": "skip unless the installed pgGit has these functions/tables",
    "superuser": "skip unless connected as a superuser",
    "first_writer": "runs right after the read-only checks, before anything else writes",
}
#: Check outcomes: a promise broken (failed), the check could not run (error), a documented
#: behaviour of another pgGit (differs), passed, skipped.
OUTCOMES = ("passed", "failed", "error", "differs", "skipped")


def _option(config: pytest.Config, name: str, env: str) -> Any:
    value = config.getoption(name, default=None)
    return value if value not in (None, False) else os.environ.get(env)


def _destructive_enabled(config: pytest.Config) -> bool:
    value = _option(config, "--destructive", ENV_DESTRUCTIVE)
    return value is True or str(value).lower() in {"1", "true", "yes", "on"}


def pytest_configure(config: pytest.Config) -> None:
    for name, help_text in _MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {help_text}")
    config.stash[_REPORT_KEY] = _Report(
        seed=_seed(config), profile=PROFILE, destructive=_destructive_enabled(config)
    )


def _order(item: pytest.Item) -> int:
    """Read-only corruption checks first (they must see the database as found), then the
    checks that need a pgGit nobody has written to yet in this run, then the rest."""
    if item.get_closest_marker("corruption") is not None:
        return 0
    if item.get_closest_marker("first_writer") is not None:
        return 1
    return 2


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_order)
    if _destructive_enabled(config):
        return
    skip = pytest.mark.skip(reason="destructive check: run with --destructive")
    for item in items:
        if item.get_closest_marker("destructive") is not None:
            item.add_marker(skip)


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def target(pytestconfig: pytest.Config) -> TargetInfo:
    """The database under check and what its pgGit offers (one catalog read per run)."""
    dsn = _option(pytestconfig, "--dsn", ENV_DSN)
    if not dsn:
        pytest.exit(
            f"no target: set {ENV_DSN} (or pass --dsn with -p pggit_chaos.checks.plugin)", 2
        )
    try:
        with connect(dsn) as conn:
            info = inspect_target(conn, dsn)
    except psycopg.Error as exc:
        pytest.exit(f"cannot connect to the target: {str(exc).strip().splitlines()[0]}", 2)
    if not info.installed:
        pytest.exit(f"the target database has no pgGit: {info.missing(['history'])}", 2)
    if _REPORT_KEY in pytestconfig.stash:
        pytestconfig.stash[_REPORT_KEY].target = info.caps.describe()
    return info


def pytest_report_header(config: pytest.Config) -> str | None:
    dsn = _option(config, "--dsn", ENV_DSN)
    if not dsn:
        return None
    try:
        with connect(dsn) as conn:
            return f"pgGit under check: {inspect_target(conn, dsn).caps.describe()}"
    except psycopg.Error:
        return None


@pytest.fixture
def deviations(request: pytest.FixtureRequest) -> Deviations:
    """Documented differences a check notes; they turn its pass into ``differs``."""
    found = Deviations()
    request.node.stash[_DEVIATIONS_KEY] = found
    return found


@pytest.fixture
def pggit(target: TargetInfo, deviations: Deviations) -> PgGitApi:
    """The installed pgGit, called the way its shape wants."""
    return PgGitApi(target.caps, deviations)


@pytest.fixture(autouse=True)
def _capabilities(request: pytest.FixtureRequest, target: TargetInfo) -> None:
    """Skip a check whose ``requires`` marker names something the installed pgGit lacks."""
    for marker in request.node.iter_markers("requires"):
        missing = target.missing(marker.args)
        if missing:
            pytest.skip(f"installed pgGit lacks {', '.join(missing)}")
    if request.node.get_closest_marker("superuser") is not None and not target.superuser:
        pytest.skip("needs a superuser connection")


@pytest.fixture
def dsn(target: TargetInfo) -> str:
    return target.dsn


@pytest.fixture
def conn(target: TargetInfo) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection with statement/lock timeouts as hang guards."""
    with connect(target.dsn) as connection:
        yield connection


@pytest.fixture
def readonly_conn(target: TargetInfo) -> Iterator[psycopg.Connection[Any]]:
    """A connection whose transactions are read-only (the corruption checks only read)."""
    with connect(target.dsn) as connection:
        connection.execute("SET default_transaction_read_only = on")
        yield connection


@pytest.fixture
def scratch(target: TargetInfo) -> Iterator[Scratch]:
    """A fresh scratch schema + branch prefix; removed with every pgGit row it caused."""
    area = Scratch.new()
    with connect(target.dsn) as setup:
        setup.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(area.schema)))
    try:
        yield area
    finally:
        with connect(target.dsn) as teardown:
            cleanup_scratch(teardown, area.token)


# -- the report the runner reads ------------------------------------------------------------

_GROUP_GUTTER = re.compile(r"^\s*\| ?")
_GROUP_RULE = re.compile(r"^\s*\+[-+]")
_FIXTURE_ARG = re.compile(r"^\s+(conn|readonly_conn|scratch|dsn|target)=")
#: Headers hypothesis puts before the shrunk input: "Falsifying [explicit ]example" up to
#: 6.16x, "Failing test case" / "Failing explicit example" in later releases.
_FALSIFYING = re.compile(
    r"^(Falsifying (?:explicit )?example|Failing (?:test case|explicit example)"
    r"|You can reproduce this example)"
)


_DEVIATIONS_KEY = pytest.StashKey[Deviations]()


def _is_broken_promise(exc: BaseException | None) -> bool:
    """An assertion (or pytest.fail / DID NOT RAISE) is a fail; anything else an error."""
    if exc is None:
        return False
    if isinstance(exc, AssertionError | pytest.fail.Exception):
        return True
    inner = getattr(exc, "exceptions", None)  # hypothesis' FlakyFailure / exception groups
    if isinstance(inner, list | tuple) and inner:
        return all(_is_broken_promise(e) for e in inner)
    return False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """Classify each check: failed (broken promise), error (could not run), differs."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.when != "call":
        return
    if report.failed:
        exc = call.excinfo.value if call.excinfo is not None else None
        report.chaos_outcome = "failed" if _is_broken_promise(exc) else "error"  # type: ignore[attr-defined]
        return
    found = item.stash.get(_DEVIATIONS_KEY, None)
    if report.passed and found is not None and found.notes:
        report.outcome = "skipped"
        path, line, _ = item.location
        report.longrepr = (str(path), (line or 0) + 1, "differs: " + "; ".join(found.notes))
        report.chaos_outcome = "differs"  # type: ignore[attr-defined]


@dataclass
class _CheckRecord:
    """What the JSON report says about one check."""

    name: str
    nodeid: str
    markers: list[str]
    outcome: str = "passed"
    duration: float = 0.0
    message: str = ""
    example: str = ""
    reason: str = ""
    examples: int = 0


@dataclass
class _Report:
    """The whole JSON report: run settings and one record per check."""

    seed: int | None
    profile: str
    destructive: bool
    hypothesis_examples: int = 0
    target: str = ""
    started: float = field(default_factory=time.time)
    checks: dict[str, _CheckRecord] = field(default_factory=dict)


_REPORT_KEY = pytest.StashKey[_Report]()


def _seed(config: pytest.Config) -> int | None:
    raw = config.getoption("hypothesis_seed", default=None)
    try:
        return int(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None


def _record(item: pytest.Item) -> _CheckRecord:
    report = item.config.stash[_REPORT_KEY]
    record = report.checks.get(item.nodeid)
    if record is None:
        wanted = set(CATEGORIES) | {"slow", "destructive"}
        markers = sorted({m.name for m in item.iter_markers()} & wanted)
        record = _CheckRecord(name=item.name, nodeid=item.nodeid, markers=markers)
        report.checks[item.nodeid] = record
    return record


def _count_examples(stats: Any) -> int:
    total = 0
    if isinstance(stats, dict):
        for phase in stats.values():
            if isinstance(phase, dict) and isinstance(phase.get("test-cases"), list):
                total += len(phase["test-cases"])
    return total


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Count the hypothesis examples each check runs (inside hypothesis' own wrapper)."""
    try:
        from hypothesis.statistics import collector
    except ImportError:  # pragma: no cover - hypothesis is a dependency
        yield
        return
    previous = collector.value
    record = _record(item)

    def note(stats: Any) -> None:
        record.examples += _count_examples(stats)
        if previous is not None:
            previous(stats)

    with collector.with_value(note):  # type: ignore[arg-type]
        yield


def _falsifying_text(report: pytest.TestReport) -> str:
    texts = [content for title, content in report.sections if "Hypothesis" in title]
    texts.append(report.longreprtext)
    blocks: list[str] = []
    for text in texts:
        # Drop the "  | " gutter of exception groups (a FlakyFailure prints its example there).
        lines = [
            "" if _GROUP_RULE.match(line) else _GROUP_GUTTER.sub("", line, count=1)
            for line in text.splitlines()
        ]
        for i, line in enumerate(lines):
            bare = line.lstrip("E ").rstrip() if line.startswith("E ") else line.strip()
            if not _FALSIFYING.match(bare):
                continue
            block = [bare]
            for follow in lines[i + 1 :]:
                cont = follow[1:] if follow.startswith("E") else follow
                if not cont.strip() or (not cont.startswith(" ") and not cont.startswith(")")):
                    if cont.strip().startswith(")"):
                        block.append(cont.rstrip())
                    break
                if not _FIXTURE_ARG.match(cont):
                    block.append(cont.rstrip())
            candidate = "\n".join(block)
            if candidate not in blocks:
                blocks.append(candidate)
    return "\n".join(blocks)


def _message(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    message = getattr(crash, "message", None)
    if message:
        return str(message)[:2000]
    return report.longreprtext.strip()[-2000:]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    config = _CONFIG.get("config")
    if config is None:
        return
    state = config.stash[_REPORT_KEY]
    record = state.checks.get(report.nodeid)
    if record is None:
        return
    record.duration += report.duration
    classified = getattr(report, "chaos_outcome", None)
    if report.skipped and record.outcome == "passed":
        record.outcome = "differs" if classified == "differs" else "skipped"
        longrepr = report.longrepr
        record.reason = str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)
        record.reason = record.reason.removeprefix("Skipped: ").removeprefix("differs: ")
    elif report.failed:
        failed = report.when == "call" and classified != "error"
        if record.outcome != "failed":  # a teardown error never hides the check's fail
            record.outcome = "failed" if failed else "error"
        if not record.message:
            record.message = _message(report)
        example = _falsifying_text(report)
        if example and not record.example:
            record.example = example


_CONFIG: dict[str, pytest.Config] = {}


def pytest_collection_finish(session: pytest.Session) -> None:
    """Register every selected check, so skipped ones appear in the report too."""
    _CONFIG["config"] = session.config
    for item in session.items:
        _record(item)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = _option(session.config, "--checks-json", ENV_REPORT)
    if not path or _REPORT_KEY not in session.config.stash:
        return
    state = session.config.stash[_REPORT_KEY]
    state.hypothesis_examples = sum(r.examples for r in state.checks.values())
    document = {
        "seed": state.seed,
        "profile": state.profile,
        "destructive": state.destructive,
        "hypothesis_examples": state.hypothesis_examples,
        "target": state.target,
        "exitstatus": int(exitstatus),
        "duration": time.time() - state.started,
        "checks": [asdict(record) for record in state.checks.values()],
    }
    Path(path).write_text(json.dumps(document, indent=2), encoding="utf-8")
