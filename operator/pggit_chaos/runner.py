"""`pggit-chaos run`: experiments on one machine, from YAML files to verdicts and report folders.

Called by the CLI once every document of every file is valid (the CLI validates with the
light :mod:`pggit_chaos.spec.loader` before importing this module, so a bad file is reported
fast). Composes the local substrate, the engine, the local checks runner, the report writers
and the metrics; shows a live progress line and a final verdict table. A run that ends before
anything was injected prints one error line on stderr instead of a table. Each outcome is
compared with what the experiment expects (:mod:`pggit_chaos.spec.expect`); several
experiments end with one summary table and one combined JUnit file.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import psycopg
from prometheus_client import REGISTRY, write_to_textfile
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from pggit_chaos.config import load_settings
from pggit_chaos.engine.journal import ChecksSummary, Journal, Phase
from pggit_chaos.engine.lifecycle import Progress, Run, execute_until_signalled
from pggit_chaos.errors import PROG, ChaosError, InvalidExperiment, error_line, message_of
from pggit_chaos.spec import Experiment
from pggit_chaos.spec.expect import Expectation, Judgement, Result, expectation_of
from pggit_chaos.spec.loader import load_paths
from pggit_chaos.target_cleanup import RUN_PREFIX, lease, remove_run

EXIT_PASS, EXIT_FAIL, EXIT_ERROR, EXIT_INCONCLUSIVE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
#: Which exit code wins when several experiments run: an error, then a fail, then inconclusive.
_EXIT_RANK = {EXIT_PASS: 0, EXIT_INCONCLUSIVE: 1, EXIT_FAIL: 2, EXIT_ERROR: 3}


def _worse(a: int, b: int) -> int:
    return a if _EXIT_RANK[a] >= _EXIT_RANK[b] else b

console = Console(highlight=False)


def check_dsn_target(experiments: Sequence[Experiment], dsn: str) -> None:
    """Before anything runs against ``--dsn``: only SQL-level faults, a reachable pgGit.

    Raises :class:`InvalidExperiment` naming each experiment whose fault needs the embedded
    PostgreSQL, then :class:`~pggit_chaos.errors.TargetUnavailable` worded exactly as
    ``pggit-chaos checks --dsn`` words it (both call :func:`pggit_chaos.pggit.connect_check`).
    """
    from pggit_chaos.local.substrate import SQL_FAULTS
    from pggit_chaos.pggit import connect_check

    refused = [
        (
            f"experiment {experiment.name}: spec.fault.type",
            f"{fault.type} needs the embedded PostgreSQL, and --dsn allows only "
            f"{', '.join(SQL_FAULTS)}: run it without --dsn",
        )
        for experiment in experiments
        for fault in experiment.spec.faults  # a scenario: any of its faults
        if str(fault.type) not in SQL_FAULTS
    ]
    if refused:
        raise InvalidExperiment(refused)
    connect_check(dsn)


def _stamp(when: datetime) -> str:
    """``2025-03-14T09:26:53.589Z``: UTC with milliseconds."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def phase_label(journal: Journal, phase: Phase) -> str:
    """The phase as a person should read it: a dry run's end is a plan, not an abort."""
    if phase.terminal and journal.dry_run_plan and journal.injected_at is None:
        return "planned (dry run)"
    return phase.value


class LiveObserver:
    """The run's progress as the user sees it.

    On a terminal: one live line (phase, elapsed, ops/s, ok, errors). It is rendered from the
    run's own clock each time rich refreshes it (4 times a second, from rich's thread), so the
    elapsed time keeps ticking through long synchronous phases. Without a terminal (CI, a
    Job's log): one timestamped line per phase, printed once, when the phase begins.
    """

    def __init__(self, live: Live | None, name: str, out: Console | None = None) -> None:
        self.live = live
        self.name = name
        self.out = out or console
        self.last = Progress(Phase.Pending, 0.0, 0.0, 0, 0)
        self.fault_active = False
        self.journal: Journal | None = None
        #: How many of the journal's phase records have been printed (no terminal).
        self.printed = 0
        if live is not None:
            live.update(self, refresh=True)

    def _elapsed(self) -> float:
        journal = self.journal
        if journal is None:
            return self.last.elapsed
        record = journal.phases[-1] if journal.phases else None
        if record is not None and record.phase.terminal:
            return record.start_offset
        return journal.offset()

    def render(self) -> Text:
        p = self.last
        phase = self.journal.current_phase if self.journal is not None else p.phase
        label = phase_label(self.journal, phase) if self.journal is not None else phase.value
        return Text.assemble(
            (f"{self.name} ", "bold"),
            (f"{label:<11}", "cyan"),
            f" {self._elapsed():6.1f}s  {p.ops_per_s:7.0f} ops/s  ok {p.ok:<7} ",
            (f"errors {p.errors}", "red" if p.errors else "dim"),
        )

    def __rich__(self) -> Text:
        return self.render()

    def phase_line(self, journal: Journal, index: int) -> str:
        """``<UTC time> <experiment> <phase> +<seconds>s <detail>`` for one phase record."""
        record = journal.phases[index]
        label = phase_label(journal, record.phase)
        detail = record.detail
        if record.phase.terminal:
            detail = journal.reason or detail
            if label != record.phase.value:
                detail = "nothing injected"
        line = f"{_stamp(record.started_at)} {self.name} {label:<11} +{record.start_offset:.1f}s"
        return f"{line}  {' '.join(detail.split())}" if detail else line

    def on_phase(self, journal: Journal) -> None:
        self.journal = journal
        self._track_active_fault(journal)
        if self.live is not None:
            self.live.refresh()
            return
        # Called for each phase and again for marks inside one (injected, recovered):
        # print every phase record once, in order.
        while self.printed < len(journal.phases):
            self.out.print(self.phase_line(journal, self.printed), markup=False,
                           highlight=False, soft_wrap=True)
            self.printed += 1

    def _track_active_fault(self, journal: Journal) -> None:
        """Keep ``pggit_chaos_active_faults`` true to the journal's injected/reverted marks."""
        from pggit_chaos import metrics

        active = journal.injected_at is not None and journal.reverted_at is None
        if active and not self.fault_active:
            metrics.fault_started(journal.fault_type)
        elif not active and self.fault_active:
            metrics.fault_ended(journal.fault_type)
        self.fault_active = active

    def on_progress(self, progress: Progress) -> None:
        self.last = progress


def local_checks_runner(report_folder: Path, seed: int | None = None):  # type: ignore[no-untyped-def]
    """A ChecksRunner that runs the suite in a subprocess and keeps its JUnit/JSON files."""

    def run(dsn: str, experiment: Experiment) -> ChecksSummary:
        from pggit_chaos.checks.runner import run_checks

        verification = experiment.spec.verification
        result = run_checks(
            dsn,
            list(verification.checks),
            profile=verification.hypothesis_profile,
            junit=report_folder / "checks-junit.xml",
            json_out=report_folder / "checks.json",
            seed=seed,
            timeout=verification.timeout.seconds,
            quiet=True,
        )
        return checks_summary(result, verification.hypothesis_profile)

    return run


def checks_summary(result: object, profile: str) -> ChecksSummary:
    """Convert the checks runner's result into the journal's summary model."""
    from pggit_chaos.engine.journal import CheckFailureSummary, CheckResultSummary

    failures = [
        CheckFailureSummary(
            name=f.name,
            message=f.message,
            seed=f.seed,
            example=f.example,
            outcome=getattr(f, "outcome", "failed"),
        )
        for f in getattr(result, "failures", [])
    ]
    results = [
        CheckResultSummary(
            name=c.name,
            outcome=c.outcome,
            message=getattr(c, "message", "") or getattr(c, "reason", "") or "",
            duration_seconds=getattr(c, "duration", None),
        )
        for c in getattr(result, "checks", [])
    ]
    return ChecksSummary(
        passed=result.passed,  # type: ignore[attr-defined]
        failed=result.failed,  # type: ignore[attr-defined]
        skipped=result.skipped,  # type: ignore[attr-defined]
        errors=getattr(result, "errors", 0),
        differs=getattr(result, "differs", 0),
        target=getattr(result, "target", None),
        seed=getattr(result, "seed", None),
        profile=profile,
        hypothesis_examples=getattr(result, "hypothesis_examples", None),
        failures=failures,
        results=results,
        residue=list(getattr(result, "residue", []) or []),
    )


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM for the block: one that arrives meanwhile is delivered (to the
    handler there was before) once the block is over. Outside the main thread: no change."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    previous = {signum: signal.signal(signum, hold) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            if handler is not None:
                signal.signal(signum, handler)
        if caught:
            signal.raise_signal(caught[0])


def _report_folder(base: Path, experiment: Experiment) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    safe = re.sub(r"[^a-z0-9.-]", "-", experiment.name.lower())
    folder = base / f"{stamp}-{safe}"
    suffix = 1
    while folder.exists():
        suffix += 1
        folder = base / f"{stamp}-{safe}-{suffix}"
    folder.mkdir(parents=True)
    return folder


def run_experiment_locally(
    experiment: Experiment,
    *,
    dsn: str | None,
    report_base: Path,
    quiet: bool = False,
    keep_evidence: bool = False,
) -> tuple[Journal, Path | None, bool]:
    """Run one experiment on the local substrate; returns (journal, report folder, interrupted).

    A dry run writes no report folder (None): its plan is printed, nothing ran to report on.

    Against a user's database (``dsn``) the run holds a lease session (so `cleanup` leaves it
    alone) and, once the journal and report are written, removes what its workload created
    there (schema, branch, commits, pgGit rows) unless ``keep_evidence``.
    """
    from pggit_chaos import metrics
    from pggit_chaos.engine.html_report import write_index
    from pggit_chaos.engine.report import write_report
    from pggit_chaos.local.state import StateFile
    from pggit_chaos.local.substrate import LocalSubstrate

    settings = load_settings()
    dry_run = experiment.spec.dry_run
    folder = (Path(tempfile.mkdtemp(prefix="pggit-chaos-dry-run-")) if dry_run
              else _report_folder(report_base, experiment))
    substrate = LocalSubstrate(state=StateFile.in_dir(settings.state_dir), dsn=dsn)
    interrupted = False
    live = None if quiet or not console.is_terminal else Live(
        console=console, transient=True, auto_refresh=True, refresh_per_second=4)
    observer = LiveObserver(live, experiment.name)
    run = Run(experiment, substrate, local_checks_runner(folder), observer)
    try:
        with (
            lease(dsn, run.run_id) if dsn else contextlib.nullcontext(),
            live if live is not None else contextlib.nullcontext(),
        ):
            asyncio.run(execute_until_signalled(run))
    except (asyncio.CancelledError, KeyboardInterrupt):
        interrupted = True
    except ChaosError as exc:  # e.g. a dry run's plan could not reach the target
        if not run.journal.current_phase.terminal:
            run.journal.finish(Phase.Error, message_of(exc), error=str(exc))
    except Exception as exc:  # a defect: keep the journal, with the traceback for the report
        if not run.journal.current_phase.terminal:
            details = "".join(traceback.format_exception(exc))
            run.journal.finish(Phase.Error, message_of(exc), error=details)
    finally:
        # Ctrl-C and SIGTERM wait until the resources are removed (a signal arriving now is
        # delivered once they are): a second Ctrl-C must not leave half of them behind.
        with signals_held():
            substrate.close()
    journal = run.journal
    if dry_run:
        shutil.rmtree(folder, ignore_errors=True)
        metrics.record_journal(journal)
        return journal, None, interrupted
    history_path = run.history.to_jsonl(folder / "history.jsonl") if len(run.history) else None
    write_report(journal, folder, history_path)
    write_index(report_base)  # index.html of the runs in the report folder (a folder's run)
    metrics.record_journal(journal)
    # The run's metrics as a node_exporter textfile, since a local run's process ends here.
    write_to_textfile(str(folder / "metrics.prom"), REGISTRY)
    if dsn and not journal.dry_run_plan:
        _remove_workload(dsn, run.run_id, keep_evidence)
    return journal, folder, interrupted


def _remove_workload(dsn: str, run_id: str, keep_evidence: bool) -> None:
    """Remove the run's workload from the user's database (the journal already holds it)."""
    from pggit_chaos.pggit import mask_dsn

    area = f"{RUN_PREFIX}{run_id}"
    if keep_evidence:
        console.print(
            f"kept the workload in the target ({area}); remove it with "
            f"`pggit-chaos cleanup --dsn '{mask_dsn(dsn)}'`",
            markup=False,
            highlight=False,
        )
        return
    try:
        gone = remove_run(dsn, run_id)
    except (ChaosError, psycopg.Error) as exc:
        print(
            error_line(
                f"removing the workload {area} from the target failed: {message_of(exc)}: "
                f"run `pggit-chaos cleanup --dsn '{mask_dsn(dsn)}'`"
            ),
            file=sys.stderr,
        )
        return
    if not gone.total and not gone.schemas:
        return
    console.print(
        f"removed the workload from the target: {gone.describe()}"
        " (--keep-evidence keeps it)",
        markup=False,
        highlight=False,
    )


def run_files(
    files: Sequence[str],
    *,
    dsn: str | None = None,
    report_dir: str | None = None,
    dry_run: bool = False,
    quiet: bool = False,
    keep_evidence: bool = False,
) -> int:
    """Validate files and folders (all problems at once), then :func:`run_experiments`.

    Other Kubernetes objects in them are skipped with a note on stderr.
    """
    notes: list[str] = []
    experiments = load_paths(files, notes)
    for note in notes:
        print(f"{PROG}: note: {note}", file=sys.stderr)
    return run_experiments(
        experiments,
        dsn=dsn,
        report_dir=report_dir,
        dry_run=dry_run,
        quiet=quiet,
        keep_evidence=keep_evidence,
    )


@dataclass
class _Ran:
    """One experiment of a ``run``: how it ended, against what it expects."""

    name: str
    judgement: Judgement
    seconds: float
    folder: Path | None


def _code_of(journal: Journal) -> int:
    """The exit code of one run's outcome, as README documents them."""
    if journal.current_phase in (Phase.Error, Phase.Aborted):
        return EXIT_ERROR
    if journal.verdict == "Inconclusive":
        return EXIT_INCONCLUSIVE
    return EXIT_PASS if journal.verdict == "Pass" else EXIT_FAIL


def _code_of_judged(journal: Journal, judgement: Judgement) -> int:
    """0 when the outcome is the expected one or a declared skip; else the outcome's own
    code, and 1 (a Fail) for a Pass where something else was expected."""
    if judgement.ok:
        return EXIT_PASS
    return _code_of(journal) or EXIT_FAIL


def run_experiments(
    experiments: Sequence[Experiment],
    *,
    dsn: str | None = None,
    report_dir: str | None = None,
    dry_run: bool = False,
    quiet: bool = False,
    keep_evidence: bool = False,
) -> int:
    """The `pggit-chaos run` command: each experiment's outcome against the one it expects.

    0 when every experiment ended as its annotations expect (without them: Passed; a declared
    skip counts as expected), else the worst code of the others (1 Fail, 2 error, 3
    Inconclusive; a Pass where a Fail was expected is 1), 130 when interrupted. With more than
    one experiment the run ends with one summary table and one combined JUnit file in the
    report folder.
    """
    from pggit_chaos.engine.report import print_verdict_table

    if dsn is not None:
        check_dsn_target(experiments, dsn)
    if dry_run:
        experiments = [
            e.model_copy(update={"spec": e.spec.model_copy(update={"dry_run": True})})
            for e in experiments
        ]
    settings = load_settings()
    base = Path(report_dir) if report_dir else settings.report_dir
    if settings.metrics_port:
        from pggit_chaos.metrics import start_metrics_server

        start_metrics_server(settings.metrics_port)
    worst = EXIT_PASS
    ran: list[_Ran] = []
    stamp = datetime.now(UTC)
    for experiment in experiments:
        expectation = expectation_of(experiment, in_cluster=False)
        began = time.monotonic()
        journal, folder, interrupted = run_experiment_locally(
            experiment, dsn=dsn, report_base=base, quiet=quiet, keep_evidence=keep_evidence
        )
        judgement = expectation.judge(journal.current_phase.value, journal.reason or "")
        if not journal.dry_run_plan:
            ran.append(_Ran(experiment.name, judgement, time.monotonic() - began, folder))
        if _never_started(journal):
            # Nothing was injected: no verdict to show, one line saying why.
            if interrupted:
                print(f"{PROG}: interrupted before anything was injected", file=sys.stderr)
                _summarise(ran, len(experiments), base, stamp, interrupted=True)
                return EXIT_INTERRUPTED
            if judgement.ok:
                print(f"{PROG}: note: {experiment.name}: {judgement.got} {judgement.result}: "
                      f"{journal.reason}", file=sys.stderr)
            else:
                print(error_line(f"{experiment.name}: {journal.reason}"), file=sys.stderr)
            worst = _worse(worst, _code_of_judged(journal, judgement))
            continue
        if journal.dry_run_plan:
            console.print(f"[bold]{experiment.name}[/]: planned (dry run), nothing injected. "
                          "A run would:")
            for n, line in enumerate(journal.dry_run_plan, 1):
                console.print(f"  {n}. {line}", soft_wrap=True, markup=False, highlight=False)
            continue
        print_verdict_table(journal, console)
        if folder is not None:
            console.print(f"report: {folder}")
        if interrupted:
            _summarise(ran, len(experiments), base, stamp, interrupted=True)
            return EXIT_INTERRUPTED
        if expectation != Expectation():
            console.print(f"expected: {judgement.expected}; got {judgement.got}: "
                          f"{judgement.result}", markup=False, highlight=False)
        if journal.current_phase in (Phase.Error, Phase.Aborted) and not judgement.ok:
            print(error_line(f"{experiment.name}: {journal.reason}"), file=sys.stderr)
        worst = _worse(worst, _code_of_judged(journal, judgement))
    _summarise(ran, len(experiments), base, stamp, interrupted=False)
    return worst


def _summarise(ran: Sequence[_Ran], planned: int, base: Path, stamp: datetime, *,
               interrupted: bool) -> None:
    """After more than one experiment: one table, one combined JUnit file (its path printed)."""
    if planned < 2 or not ran:
        return
    table = Table(title=f"{len(ran)} of {planned} experiments"
                  + (" (interrupted)" if interrupted else ""), title_justify="left")
    reports = [_shown(item.folder) if item.folder is not None else "-" for item in ran]
    for column in ("experiment", "expected", "got", "result", "time", "report"):
        table.add_column(column, overflow="fold")
    styles = {Result.met: "green", Result.skipped: "yellow", Result.unexpected: "bold red"}
    for item, report in zip(ran, reports, strict=True):
        j = item.judgement
        result = Text(str(j.result), style=styles[j.result])
        if j.result is Result.skipped:
            result.append(f": {j.reason}")
        table.add_row(item.name, str(j.expected), j.got, result, f"{item.seconds:.0f}s", report)
    console.print(table)
    junit = write_run_junit(ran, base / f"{stamp.strftime('%Y%m%dT%H%M%SZ')}-run-junit.xml")
    met = sum(1 for item in ran if item.judgement.result is Result.met)
    skipped = sum(1 for item in ran if item.judgement.result is Result.skipped)
    unexpected = len(ran) - met - skipped
    console.print(f"{met} as expected, {skipped} skipped, {unexpected} unexpected; "
                  f"junit: {_shown(junit)}", markup=False, highlight=False, soft_wrap=True)


def _shown(path: Path) -> str:
    """``path`` relative to the working folder when inside it (``chaos-reports/...``)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def write_run_junit(ran: Sequence[_Ran], path: Path) -> Path:
    """One testsuite ``pggit-chaos run``, one testcase per experiment: a mismatch is a
    failure naming expected and got, a declared skip is skipped."""
    from junitparser import Failure, JUnitXml, Skipped, TestCase, TestSuite

    suite = TestSuite("pggit-chaos run")
    for item in ran:
        j = item.judgement
        case = TestCase(item.name, classname="pggit-chaos.run", time=round(item.seconds, 3))
        if j.result is Result.unexpected:
            case.result = [Failure(f"expected {j.expected}, got {j.got}: {j.reason}".strip())]
        elif j.result is Result.skipped:
            case.result = [Skipped(f"{j.got}: {j.reason}")]
        case.system_out = f"expected {j.expected}, got {j.got}" + (
            f"; report: {item.folder}" if item.folder is not None else "")
        suite.add_testcase(case)
    xml = JUnitXml()
    xml.add_testsuite(suite)
    path.parent.mkdir(parents=True, exist_ok=True)
    xml.write(str(path), pretty=True)
    return path


def _never_started(journal: Journal) -> bool:
    """The run ended in Error or Aborted before a fault was injected (a dry run excepted)."""
    return (
        journal.current_phase in (Phase.Error, Phase.Aborted)
        and journal.injected_at is None
        and not journal.dry_run_plan
    )
