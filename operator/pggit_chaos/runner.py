"""`pggit-chaos run`: experiments on one machine, from YAML files to verdicts and report folders.

Called by the CLI. Composes the local substrate, the engine, the local checks runner, the
report writers and the metrics; shows a live progress line and a final verdict table. Every
document of every file is validated before anything runs (all problems at once, exit 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import REGISTRY, write_to_textfile
from rich.console import Console
from rich.live import Live
from rich.text import Text

from pggit_chaos.config import load_settings
from pggit_chaos.engine.journal import ChecksSummary, Journal, Phase
from pggit_chaos.engine.lifecycle import Progress, Run
from pggit_chaos.errors import InvalidExperiment
from pggit_chaos.spec import Experiment, load_experiments

EXIT_PASS, EXIT_FAIL, EXIT_ERROR, EXIT_INCONCLUSIVE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
#: Which exit code wins when several experiments run: an error, then a fail, then inconclusive.
_EXIT_RANK = {EXIT_PASS: 0, EXIT_INCONCLUSIVE: 1, EXIT_FAIL: 2, EXIT_ERROR: 3}


def _worse(a: int, b: int) -> int:
    return a if _EXIT_RANK[a] >= _EXIT_RANK[b] else b

console = Console(highlight=False)


def load_all(files: list[str]) -> list[Experiment]:
    """Every experiment of every file; all invalid documents reported together."""
    experiments: list[Experiment] = []
    problems: list[tuple[str, str]] = []
    for file in files:
        try:
            experiments.extend(load_experiments(file))
        except InvalidExperiment as exc:
            where = exc.source or file
            problems.extend((f"{where}: {path}", reason) for path, reason in exc.problems)
    if problems:
        raise InvalidExperiment(problems)
    return experiments


class LiveObserver:
    """The live progress line: phase, elapsed, ops/s, errors."""

    def __init__(self, live: Live | None, name: str) -> None:
        self.live = live
        self.name = name
        self.last = Progress(Phase.Pending, 0.0, 0.0, 0, 0)
        self.fault_active = False

    def _render(self, phase: Phase) -> Text:
        p = self.last
        return Text.assemble(
            (f"{self.name} ", "bold"),
            (f"{phase.value:<11}", "cyan"),
            f" {p.elapsed:6.1f}s  {p.ops_per_s:7.0f} ops/s  ok {p.ok:<7} ",
            (f"errors {p.errors}", "red" if p.errors else "dim"),
        )

    def on_phase(self, journal: Journal) -> None:
        self._track_active_fault(journal)
        if self.live is not None:
            self.live.update(self._render(journal.current_phase))
        else:
            console.print(f"{self.name}: {journal.current_phase.value}", style="dim")

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
        if self.live is not None:
            self.live.update(self._render(progress.phase))


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
            message=getattr(c, "message", "") or "",
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
    )


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


async def _run_one(run: Run) -> Journal:
    """Run in a task that SIGTERM and SIGINT cancel (so the revert runs and the journal is kept)."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(run.execute())
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    try:
        return await task
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def run_experiment_locally(
    experiment: Experiment,
    *,
    dsn: str | None,
    report_base: Path,
    quiet: bool = False,
) -> tuple[Journal, Path, bool]:
    """Run one experiment on the local substrate; returns (journal, report folder, interrupted)."""
    from pggit_chaos import metrics
    from pggit_chaos.engine.report import write_report
    from pggit_chaos.faults.state import StateFile
    from pggit_chaos.local.substrate import LocalSubstrate

    settings = load_settings()
    folder = _report_folder(report_base, experiment)
    substrate = LocalSubstrate(state=StateFile.in_dir(settings.state_dir), dsn=dsn)
    interrupted = False
    live = None if quiet or not console.is_terminal else Live(console=console, transient=True)
    observer = LiveObserver(live, experiment.name)
    run = Run(experiment, substrate, local_checks_runner(folder), observer)
    try:
        with live if live is not None else contextlib.nullcontext():
            asyncio.run(_run_one(run))
    except (asyncio.CancelledError, KeyboardInterrupt):
        interrupted = True
    except Exception as exc:  # a defect: still keep the journal, say where it is
        if not run.journal.current_phase.terminal:
            run.journal.finish(Phase.Error, f"internal error: {exc!r}", error=repr(exc))
    finally:
        substrate.close()
    journal = run.journal
    history_path = run.history.to_jsonl(folder / "history.jsonl") if len(run.history) else None
    write_report(journal, folder, history_path)
    metrics.record_journal(journal)
    # The run's metrics as a node_exporter textfile, since a local run's process ends here.
    write_to_textfile(str(folder / "metrics.prom"), REGISTRY)
    return journal, folder, interrupted


def run_files(
    files: list[str],
    *,
    dsn: str | None = None,
    report_dir: str | None = None,
    dry_run: bool = False,
    quiet: bool = False,
) -> int:
    """The `pggit-chaos run` command: 0 all Pass, 1 any Fail, 2 invalid input or error."""
    from pggit_chaos.engine.report import print_verdict_table

    experiments = load_all(files)
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
    for experiment in experiments:
        journal, folder, interrupted = run_experiment_locally(
            experiment, dsn=dsn, report_base=base, quiet=quiet
        )
        if journal.dry_run_plan:
            console.print(f"[bold]{experiment.name}[/]: plan (dry run, nothing injected)")
            for line in journal.dry_run_plan:
                console.print(f"  {line}", soft_wrap=True)
            continue
        print_verdict_table(journal, console)
        console.print(f"report: {folder}")
        if interrupted:
            return EXIT_INTERRUPTED
        if journal.current_phase in (Phase.Error, Phase.Aborted):
            console.print(f"[bold red]{experiment.name}: {journal.reason}[/]", soft_wrap=True)
            worst = _worse(worst, EXIT_ERROR)
        elif journal.verdict == "Inconclusive":
            worst = _worse(worst, EXIT_INCONCLUSIVE)
        elif journal.verdict != "Pass":
            worst = _worse(worst, EXIT_FAIL)
    return worst
