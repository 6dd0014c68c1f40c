"""Report files of a finished run, and the CLI's final verdict table, from one :class:`Journal`.

Called by the CLI (``pggit-chaos run`` writes the folder and prints :func:`render_verdict_table`)
and by the verification Job in a cluster. :func:`write_report` writes ``journal.json``,
``junit.xml`` (for CI), ``summary.md`` (for a person), ``report.html`` (the same as one page to
forward: :mod:`pggit_chaos.engine.html_report`) and ``timeline.png`` (the picture a user looks at
first: operations/s and errors/s with the fault window shaded and recovery marked).
Each shows the fault's evidence (did it bite, and the figures that say so), recovery seconds as
measured and what they count from, and a dry run as a plan, never as an abort.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from junitparser import Error, Failure, JUnitXml, Skipped, TestCase, TestSuite
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from pggit_chaos.engine.html_report import figure, write_html_report
from pggit_chaos.engine.journal import (
    AFTER_RECOVERY,
    STEADY_STATE,
    AssertionSummary,
    Journal,
    Phase,
)

__all__ = [
    "TIMELINE_SIZE_PX",
    "ReportFiles",
    "format_seconds",
    "print_verdict_table",
    "recovery_text",
    "render_verdict_table",
    "replay_command",
    "write_junit",
    "write_report",
    "write_summary",
    "write_timeline",
]

#: Width and height of ``timeline.png`` in pixels.
TIMELINE_SIZE_PX = (1200, 500)
_DPI = 100

_GREEN = "#2e7d32"
_RED = "#c62828"
_GREY = "#757575"
_AMBER = "#ef6c00"
_OK_COLOUR = "#2e7d32"
_ERR_COLOUR = "#d32f2f"
_FAULT_COLOUR = "#ff9800"
_RECOVERY_COLOUR = "#1565c0"
_PHASE_COLOURS = {
    Phase.Pending: "#eceff1",
    Phase.SteadyState: "#e3f2fd",
    Phase.Injecting: "#ffe0b2",
    Phase.Recovering: "#e1f5fe",
    Phase.Verifying: "#ede7f6",
}

_SHORT_PHASE = {
    Phase.Pending: "Pend.",
    Phase.SteadyState: "Steady",
    Phase.Injecting: "Inject",
    Phase.Recovering: "Recov.",
    Phase.Verifying: "Verify",
}


@dataclass(frozen=True)
class ReportFiles:
    """Paths of the files :func:`write_report` wrote."""

    folder: Path
    journal: Path
    junit: Path
    summary: Path
    timeline: Path
    history: Path | None = None
    html: Path | None = None
    """``report.html``: the same, as one self-contained page to forward."""
    history_note: str | None = None
    """Why there is no history.jsonl (e.g. a cluster run's history too large to keep)."""


def format_seconds(seconds: float | None) -> str:
    """``0.42 s``, ``12.3 s``, ``2 m 05 s``; an em dash for None."""
    if seconds is None:
        return "—"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} m {rest:02d} s"


def replay_command(seed: int | None, dsn: str = "$DSN") -> str:
    """The command that replays the checks suite with a hypothesis seed."""
    seed_part = f" --seed {seed}" if seed is not None else ""
    return f'pggit-chaos checks --dsn "{dsn}"{seed_part}'


def _is_dry_run(journal: Journal) -> bool:
    return bool(journal.dry_run_plan) and journal.injected_at is None


def _verdict_word(journal: Journal) -> str:
    if journal.verdict is not None:
        return journal.verdict.upper()
    if _is_dry_run(journal):
        return "PLANNED (DRY RUN)"
    return journal.current_phase.value.upper()


def _verdict_colour(journal: Journal) -> str:
    if journal.verdict == "Pass":
        return _GREEN
    if journal.verdict == "Fail" or journal.current_phase is Phase.Error:
        return _RED
    if journal.current_phase is Phase.Aborted and not _is_dry_run(journal):
        return _AMBER
    if journal.verdict == "Inconclusive":
        return _AMBER
    return _GREY


def recovery_text(journal: Journal) -> str:
    """``1.63 s from the kill to the first healthy probe`` (what the seconds count from)."""
    if journal.recovery_state == "timed-out":
        limit = (f" within {format_seconds(journal.recovery_timeout_seconds)}"
                 if journal.recovery_timeout_seconds is not None else "")
        return f"not healthy{limit}"
    if journal.recovery_seconds is None:
        return "not measured (nothing was injected)"
    start = ("the injection" if journal.recovery_from == "injection" else "the revert")
    if journal.recovery_from == "injection" and journal.fault_type == "pod-kill":
        start = "the kill"
    return f"{format_seconds(journal.recovery_seconds)} from {start} to the first healthy probe"


def _phase_note(journal: Journal, phase: Phase, detail: str) -> str:
    """What a phase's duration is made of, where that is not obvious."""
    window = journal.fault_window
    if phase is Phase.Injecting and journal.fault_steps:
        return "; ".join(f"{step.fault_type} held {format_seconds(step.seconds)}"
                         if step.seconds is not None else f"{step.fault_type} NOT reverted"
                         for step in journal.fault_steps)
    if phase is Phase.Injecting and window is not None and window.seconds is not None:
        note = f"{window.fault_type or journal.fault_type} held {format_seconds(window.seconds)}"
        if window.outage_seconds is not None:
            note += f", database down {format_seconds(window.outage_seconds)} of it"
        return note
    if phase is Phase.Recovering and journal.recovery_seconds is not None:
        if journal.recovery_from == "injection":
            return "healthy again during the hold; confirmed after the revert"
        return "until the first healthy probe"
    if phase is Phase.Verifying:
        return detail
    return ""


# -- JUnit ---------------------------------------------------------------------------------


def write_junit(journal: Journal, path: Path) -> Path:
    """One testsuite ``pggit-chaos.<experiment>``: invariants, checks, recovery, verdict."""
    suite_name = f"pggit-chaos.{journal.experiment}"
    suite = TestSuite(suite_name)
    if journal.started_at is not None:
        suite.timestamp = journal.started_at.isoformat()
    for key, value in (("run_id", journal.run_id), ("namespace", journal.namespace),
                       ("substrate", journal.substrate), ("fault", journal.fault_type),
                       ("phase", journal.current_phase.value)):
        suite.add_property(key, value)
    if journal.checks.seed is not None:
        suite.add_property("hypothesis_seed", str(journal.checks.seed))

    for invariant in journal.invariants:
        case = TestCase(invariant.name, classname=f"{suite_name}.invariants")
        if not invariant.passed:
            failure = Failure(invariant.message or "invariant violated", "InvariantViolated")
            failure.text = "\n".join(invariant.examples) or invariant.message
            case.result = [failure]
        elif invariant.state == "error":
            case.result = [Error(invariant.message, "InvariantNotEvaluated")]
        elif invariant.state == "skipped":
            case.result = [Skipped(invariant.message)]
        elif invariant.message:
            case.system_out = invariant.message
        suite.add_testcase(case)

    for name, results in _assertions_by_name(journal).items():
        case = TestCase(name, classname=f"{suite_name}.assertions")
        failed = [r for r in results if r.outcome == "failed"]
        errored = [r for r in results if r.outcome == "error"]
        if failed:
            failure = Failure(failed[0].line, "AssertionFailed")
            failure.text = "\n".join(r.line for r in results)
            case.result = [failure]
        elif errored:
            case.result = [Error(errored[0].line, "AssertionNotEvaluated")]
        else:
            case.system_out = "\n".join(r.line for r in results)
        suite.add_testcase(case)

    checks = journal.checks
    failures_by_name = {f.name: f for f in checks.failures}
    check_class = f"{suite_name}.checks"
    if checks.results:
        for result in checks.results:
            case = TestCase(result.name, classname=check_class, time=result.duration_seconds)
            if result.outcome == "failed":
                detail = failures_by_name.get(result.name)
                message = (detail.message if detail else "") or result.message or "check failed"
                failure = Failure(message, "CheckFailed")
                seed = detail.seed if detail and detail.seed is not None else checks.seed
                failure.text = _check_failure_text(seed, detail.example if detail else None,
                                                   message)
                case.result = [failure]
            elif result.outcome == "error":
                detail = failures_by_name.get(result.name)
                message = (detail.message if detail else "") or result.message or "could not run"
                case.result = [Error(message, "CheckNotRun")]
            elif result.outcome == "skipped":
                case.result = [Skipped(result.message or "skipped")]
            elif result.outcome == "differs":
                case.result = [Skipped(f"differs: {result.message}", "differs")]
            suite.add_testcase(case)
        reported = {r.name for r in checks.results}
        leftover = [f for f in checks.failures if f.name not in reported]
    else:
        leftover = list(checks.failures)
        if checks.ran:
            case = TestCase("checks-suite", classname=check_class)
            case.system_out = (f"passed={checks.passed} failed={checks.failed} "
                               f"skipped={checks.skipped} seed={checks.seed}")
            if checks.failed and not checks.failures:
                case.result = [Failure(f"{checks.failed} checks failed", "CheckFailed")]
            elif not checks.passed and not checks.failed:
                case.result = [Skipped("every check was skipped")]
            suite.add_testcase(case)
    for detail in leftover:
        case = TestCase(detail.name, classname=check_class)
        failure = Failure(detail.message or "check failed", "CheckFailed")
        failure.text = _check_failure_text(
            detail.seed if detail.seed is not None else checks.seed, detail.example,
            detail.message)
        case.result = [failure]
        suite.add_testcase(case)

    evidence = journal.fault_evidence
    if evidence is not None:
        bit = TestCase("fault-bit", classname=suite_name)
        if evidence.bit:
            bit.system_out = evidence.summary
        else:
            bit.result = [Skipped(f"inconclusive: {evidence.summary}")]
        suite.add_testcase(bit)

    recovery = TestCase("recovery", classname=suite_name, time=journal.recovery_seconds)
    state = journal.recovery_state
    if state == "timed-out":
        limit = (f" within {journal.recovery_timeout_seconds:g} s"
                 if journal.recovery_timeout_seconds is not None else "")
        recovery.result = [Failure(f"the database did not become healthy{limit}",
                                   "RecoveryTimeout")]
    elif state == "not-reached":
        recovery.result = [Skipped("recovery was not waited for (nothing injected)")]
    else:
        recovery.system_out = f"healthy after {journal.recovery_seconds:.3f} s " \
                              f"(from the {journal.recovery_from})"
    suite.add_testcase(recovery)

    verdict = TestCase("verdict", classname=suite_name, time=journal.duration_seconds)
    phase = journal.current_phase
    if journal.verdict == "Fail":
        verdict.result = [Failure(journal.reason or "experiment failed", "Fail")]
    elif journal.verdict == "Inconclusive":
        verdict.result = [Skipped(f"inconclusive: {journal.reason}")]
    elif _is_dry_run(journal):
        verdict.result = [Skipped("planned (dry run): nothing injected")]
    elif phase in (Phase.Aborted, Phase.Error):
        error = Error(journal.reason or journal.error or phase.value, phase.value)
        error.text = journal.error or journal.reason
        verdict.result = [error]
    elif journal.verdict is None:
        verdict.result = [Skipped(f"no verdict (phase {phase.value})")]
    if journal.drift:
        verdict.system_out = "drift reported:\n" + "\n".join(journal.drift)
    suite.add_testcase(verdict)

    suite.update_statistics()  # type: ignore[no-untyped-call]
    if journal.duration_seconds is not None:
        suite.time = journal.duration_seconds
    xml = JUnitXml()
    xml.add_testsuite(suite)
    xml.write(str(path), pretty=True)
    return path


def _assertions_by_name(journal: Journal) -> dict[str, list[AssertionSummary]]:
    """Each assertion's results (steady state, after recovery), in the spec's order."""
    grouped: dict[str, list[AssertionSummary]] = {}
    for result in journal.assertions:
        grouped.setdefault(result.name, []).append(result)
    return grouped


def _check_failure_text(seed: int | None, example: str | None, message: str) -> str:
    lines = [message] if message else []
    if example:
        lines += ["", "Falsifying example:", example]
    if seed is not None:
        lines += ["", f"Replay: {replay_command(seed)}"]
    return "\n".join(lines)


# -- Markdown summary ----------------------------------------------------------------------


_ASSERTION_MARKS = {"passed": "✅ held", "failed": "❌ **fail**",
                    "error": "⚠️ could not evaluate"}


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _wall(value: datetime | None) -> str:
    return "—" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} ms"


def _phase_latency_text(journal: Journal) -> str:
    """``"SteadyState p50/p99 3.1/9.8 ms (40 ok) · Injecting ..."``; empty without samples."""
    return " · ".join(
        f"{p.phase.value} p50/p99 {p.latency_p50_ms:.1f}/{p.latency_p99_ms:.1f} ms ({p.ok:,} ok)"
        for p in journal.workload.phases
        if p.latency_p50_ms is not None and p.latency_p99_ms is not None)


def write_summary(journal: Journal, path: Path, timeline_name: str = "timeline.png",
                  history_name: str | None = None, history_note: str | None = None) -> Path:
    """A short Markdown summary: verdict and reason first, then the figures behind it."""
    word = _verdict_word(journal)
    icon = {"PASS": "✅", "FAIL": "❌"}.get(word, "⚠️")
    lines = [f"# {icon} {word}: {journal.experiment}", ""]
    if journal.reason:
        lines += [f"**{word}** — {journal.reason}", ""]
    lines += [
        f"Experiment `{journal.namespace}/{journal.experiment}` · fault "
        f"`{journal.fault_type or 'unknown'}` · substrate `{journal.substrate}` · "
        f"run `{journal.run_id}`",
        "",
        f"Started {_wall(journal.started_at)}, "
        f"took {format_seconds(journal.duration_seconds)}.",
        "",
        f"![timeline]({timeline_name})",
        "",
    ]
    if journal.error:
        lines += ["## Error", "", "```", journal.error.strip(), "```", ""]
    if journal.dry_run_plan:
        lines += ["## Dry-run plan", "", "Nothing was injected. A run would:", ""]
        lines += [f"{i}. {_cell(step)}" for i, step in enumerate(journal.dry_run_plan, 1)]
        lines.append("")
    if journal.fault_steps:
        lines += ["## Faults of the scenario", "",
                  "| Fault | Target | Injected | Reverted | Window | Held | Evidence |",
                  "|---|---|---|---|---|---:|---|"]
        for step in journal.fault_steps:
            end = (f"+{step.end_offset:.2f} s" if step.end_offset is not None
                   else "NOT reverted")
            bite = ("" if step.evidence is None else
                    ("bit: " if step.evidence.bit else "did not bite: ") + step.evidence.summary)
            lines.append(f"| {step.fault_type} | {_cell(step.target)} | "
                         f"{_wall(step.started_at)} | {_wall(step.ended_at)} | "
                         f"+{step.start_offset:.2f} s → {end} | "
                         f"{format_seconds(step.seconds)} | {_cell(bite)} |")
        lines.append("")
    evidence = journal.fault_evidence
    if evidence is not None:
        lines += ["## Fault evidence", ""]
        lines.append(f"✅ **The fault bit**: {_cell(evidence.summary)}" if evidence.bit
                     else f"⚠️ **The fault did not bite** (the verdict cannot be Pass): "
                          f"{_cell(evidence.summary)}")
        lines.append("")
        if evidence.figures:
            lines += ["| reading | value |", "|---|---:|"]
            lines += [f"| {_cell(key)} | {_cell(figure(value))} |"
                      for key, value in evidence.figures.items()]
            lines.append("")

    if journal.phases:
        lines += ["## Phases", "", "| Phase | Started | Duration | Detail |", "|---|---|---:|---|"]
        for record in journal.phases:
            duration = "" if record.phase.terminal else format_seconds(record.elapsed_seconds)
            name = record.phase.value
            detail = _phase_note(journal, record.phase, record.detail) or record.detail
            if record.phase.terminal and _is_dry_run(journal):
                name, detail = "planned (dry run)", "nothing injected"
            lines.append(f"| {name} | +{record.start_offset:.2f} s | {duration} | "
                         f"{_cell(detail)} |")
        lines.append("")

    w = journal.workload
    lines += [
        "## Workload", "",
        "| invoked | ok | failed | indeterminate | lost | duplicated | unexpected |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {w.invoked:,} | {w.ok:,} | {w.failed:,} | {w.indeterminate:,} | **{w.lost:,}** | "
        f"**{w.duplicated:,}** | **{w.unexpected:,}** |",
        "",
        f"Throughput {w.throughput_ops_s:.1f} ops/s · latency p50 {_ms(w.latency_p50_ms)}, "
        f"p95 {_ms(w.latency_p95_ms)}, p99 {_ms(w.latency_p99_ms)}.",
        "",
    ]
    by_phase = _phase_latency_text(journal)
    if by_phase:
        lines += [f"By phase (invoked in it): {by_phase}.", ""]
    lines += [
        "## Recovery", "",
    ]
    state = journal.recovery_state
    if state == "recovered":
        lines.append(f"Healthy again after **{recovery_text(journal)}**.")
        outage = journal.fault_window.outage_seconds if journal.fault_window else None
        if outage is not None and journal.fault_window is not None \
                and journal.fault_window.seconds is not None:
            lines.append(f"The database was down {format_seconds(outage)} of the "
                         f"{format_seconds(journal.fault_window.seconds)} the fault was held.")
    elif state == "timed-out":
        limit = (f" within the {format_seconds(journal.recovery_timeout_seconds)} timeout"
                 if journal.recovery_timeout_seconds is not None else "")
        lines.append(f"**Not healthy{limit}.**")
    else:
        lines.append("Not measured (nothing was injected).")
    lines.append("")

    if journal.invariants:
        lines += ["## Invariants", "", "| Invariant | Result | Detail |", "|---|---|---|"]
        marks = {"passed": "✅ pass", "failed": "❌ **fail**", "skipped": "⏭️ not checked",
                 "error": "⚠️ could not evaluate"}
        for inv in journal.invariants:
            result = marks.get(inv.state, inv.state)
            lines.append(f"| {_cell(inv.name)} | {result} | {_cell(inv.message)} |")
        lines.append("")
        for inv in journal.invariants:
            if not inv.passed and inv.examples:
                lines.append(f"First examples for `{inv.name}`:")
                lines += [f"- `{_cell(example)}`" for example in inv.examples[:10]]
                lines.append("")
    if journal.assertions:
        lines += ["## Assertions", "", "| Assertion | Steady state | After recovery | Detail |",
                  "|---|---|---|---|"]
        for name, results in _assertions_by_name(journal).items():
            at = {r.phase: r for r in results}
            cells = [_ASSERTION_MARKS[at[p].outcome] if p in at else "— not reached"
                     for p in (STEADY_STATE, AFTER_RECOVERY)]
            detail = "; ".join(f"{r.phase}: {r.message}" for r in results if r.message)
            lines.append(f"| {_cell(name)} | {cells[0]} | {cells[1]} | {_cell(detail)} |")
        lines.append("")
    if journal.drift:
        lines += ["## Drift reported", ""]
        lines += [f"- {_cell(item)}" for item in journal.drift]
        lines.append("")

    c = journal.checks
    if c.ran or c.failures:
        profile = f" at profile `{c.profile}`" if c.profile else ""
        seed = f", seed `{c.seed}`" if c.seed is not None else ""
        examples = (f", {c.hypothesis_examples} hypothesis examples"
                    if c.hypothesis_examples is not None else "")
        target = [f"pgGit under check: {c.target}.", ""] if c.target else []
        lines += ["## Checks", "", *target,
                  f"{c.passed} passed, {c.failed} failed, {c.errors} could not run, "
                  f"{c.differs} differ, {c.skipped} skipped{profile}{seed}{examples}.", ""]
        if c.residue:
            lines += ["### Left in the target", "",
                      "What the checks changed and no sweep can undo (rows naming no scratch area, "
                      "sequences advanced):", ""]
            lines += [f"- {_cell(item)}" for item in c.residue]
            lines.append("")
        if c.failures:
            lines += ["### Failing checks", ""]
            for failure in c.failures:
                seed_value = failure.seed if failure.seed is not None else c.seed
                lines.append(f"- **{_cell(failure.name)}** — {_cell(failure.message)}")
                if seed_value is not None:
                    lines.append(f"  - seed `{seed_value}`, replay: "
                                 f"`{replay_command(seed_value)}`")
                if failure.example:
                    lines += ["  - falsifying example:", "", "    ```",
                              *[f"    {line}" for line in failure.example.strip().splitlines()],
                              "    ```"]
            lines.append("")

    lines += ["## Files", "", "- [report.html](report.html) (this report as one page)",
              "- [journal.json](journal.json)", "- [junit.xml](junit.xml)",
              f"- [{timeline_name}]({timeline_name})"]
    if history_name:
        lines.append(f"- [{history_name}]({history_name}) (workload history)")
    elif history_note:
        lines.append(f"- no workload history: {history_note}")
    lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


# -- timeline PNG --------------------------------------------------------------------------


def _end_offset(journal: Journal) -> float:
    candidates = [0.0]
    series = journal.series
    if series.t:
        candidates.append(series.t[-1] + series.bucket_seconds)
    for record in journal.phases:
        candidates.append(record.end_offset if record.end_offset is not None
                          else record.start_offset)
    window = journal.fault_window
    if window is not None:
        candidates.append(window.end_offset if window.end_offset is not None
                          else window.start_offset)
    if journal.recovered_offset is not None:
        candidates.append(journal.recovered_offset)
    return max(candidates)


def _draw_phase_ribbon(ax: Axes, journal: Journal, end: float) -> None:
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.tick_params(axis="x", which="both", bottom=False, labelbottom=False)
    for record in journal.phases:
        if record.phase.terminal:
            continue
        start = record.start_offset
        stop = record.end_offset if record.end_offset is not None else end
        if stop <= start:
            continue
        ax.axvspan(start, stop, color=_PHASE_COLOURS.get(record.phase, "#eeeeee"), lw=0)
        ax.axvline(start, color="#b0bec5", lw=0.8)
        share = (stop - start) / max(end, 1e-9)
        label = record.phase.value if share > 0.09 else _SHORT_PHASE.get(record.phase, "")
        if share > 0.035:
            ax.text((start + stop) / 2, 0.5, label, ha="center", va="center",
                    fontsize=9 if share > 0.09 else 8, color="#37474f", clip_on=True)


def _shade_fault(axes: list[Axes], journal: Journal, end: float, label_ax: Axes) -> None:
    """The fault's effect as a band. For a fault that heals while held (pod-kill), the band is
    the outage itself, from the kill to the first healthy probe; the rest of the hold is a
    lighter band."""
    window = journal.fault_window
    if window is None:
        return
    if journal.fault_steps:
        _shade_steps(axes, journal, end, label_ax)
        return
    stop = window.end_offset if window.end_offset is not None else end
    outage_end = window.outage_end_offset
    band_end = min(outage_end, stop) if outage_end is not None else stop
    for ax in axes:
        ax.axvspan(window.start_offset, band_end, color=_FAULT_COLOUR, alpha=0.18, lw=0,
                   zorder=0)
        if outage_end is not None and band_end < stop:
            ax.axvspan(band_end, stop, facecolor=_FAULT_COLOUR, alpha=0.05, lw=0, zorder=0,
                       hatch="//", edgecolor=_FAULT_COLOUR)
        ax.axvline(window.start_offset, color=_FAULT_COLOUR, lw=1.2, alpha=0.9)
        if window.end_offset is not None:
            ax.axvline(stop, color=_FAULT_COLOUR, lw=1.2, alpha=0.9, ls="--")
    fault = window.fault_type or journal.fault_type or "fault"
    if window.end_offset is None:
        label = f"{fault} (not reverted)"
    elif outage_end is not None:
        label = (f"{fault}: down {band_end - window.start_offset:.1f} s "
                 f"(held {stop - window.start_offset:.1f} s)")
    else:
        label = f"{fault} ({stop - window.start_offset:.1f} s)"
    transform = blended_transform_factory(label_ax.transData, label_ax.transAxes)
    label_ax.text(window.start_offset + (band_end - window.start_offset) / 2
                  if outage_end is None else window.start_offset, 0.97,
                  label, transform=transform, ha="center" if outage_end is None else "left",
                  va="top", fontsize=10, fontweight="bold", color="#e65100",
                  bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": _FAULT_COLOUR,
                        "alpha": 0.9})


#: Colours of a scenario's fault windows, in step order.
_STEP_COLOURS = ("#ff9800", "#8e24aa", "#00897b", "#c62828", "#3949ab", "#6d4c41",
                 "#546e7a", "#d81b60")


def _shade_steps(axes: list[Axes], journal: Journal, end: float, label_ax: Axes) -> None:
    """A scenario: each fault's window as a band of its own colour, labelled at its own
    height (overlapping windows of a parallel scenario stay readable)."""
    transform = blended_transform_factory(label_ax.transData, label_ax.transAxes)
    for number, step in enumerate(journal.fault_steps):
        colour = _STEP_COLOURS[number % len(_STEP_COLOURS)]
        stop = step.end_offset if step.end_offset is not None else end
        for ax in axes:
            ax.axvspan(step.start_offset, stop, color=colour, alpha=0.14, lw=0, zorder=0)
            ax.axvline(step.start_offset, color=colour, lw=1.2, alpha=0.9)
            if step.end_offset is not None:
                ax.axvline(stop, color=colour, lw=1.2, alpha=0.9, ls="--")
        label = (f"{step.fault_type} (not reverted)" if step.end_offset is None
                 else f"{step.fault_type} ({stop - step.start_offset:.1f} s)")
        label_ax.text(step.start_offset, 0.97 - 0.11 * number, label, transform=transform,
                      ha="left", va="top", fontsize=9, fontweight="bold", color=colour,
                      bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": colour,
                            "alpha": 0.9})


def _mark_recovery(axes: list[Axes], journal: Journal, end: float, label_ax: Axes) -> None:
    transform = blended_transform_factory(label_ax.transData, label_ax.transAxes)
    if journal.recovered_offset is not None and journal.recovery_seconds is not None:
        x = journal.recovered_offset
        for ax in axes:
            ax.axvline(x, color=_RECOVERY_COLOUR, lw=1.6, ls=(0, (4, 2)), zorder=3)
        near_end = x > 0.8 * end  # label to the left of the line, inside the plot
        label_ax.text(x, 0.80, f"recovered (+{journal.recovery_seconds:.1f}s) " if near_end
                      else f" recovered (+{journal.recovery_seconds:.1f}s)",
                      transform=transform, ha="right" if near_end else "left", va="top",
                      fontsize=9.5,
                      color=_RECOVERY_COLOUR, fontweight="bold",
                      bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none",
                            "alpha": 0.85})
    elif journal.recovery_state == "timed-out":
        x = end
        for ax in axes:
            ax.axvline(x, color=_RED, lw=1.6, ls=(0, (4, 2)), zorder=3)
        label_ax.text(x, 0.80, "no recovery (timed out) ", transform=transform, ha="right",
                      va="top", fontsize=9.5, color=_RED, fontweight="bold",
                      bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none",
                            "alpha": 0.85})


def build_timeline_figure(journal: Journal) -> Figure:
    """The timeline figure (operations/s, errors/s, phases, fault window, recovery)."""
    width, height = TIMELINE_SIZE_PX
    fig = plt.figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI, facecolor="white")
    header_lines = int(bool(journal.reason and journal.verdict != "Pass")) + int(
        journal.fault_evidence is not None)
    grid = fig.add_gridspec(3, 1, height_ratios=[0.32, 3.0, 1.25], hspace=0.08,
                            left=0.065, right=0.985, bottom=0.1,
                            top=(0.84, 0.8, 0.765)[min(header_lines, 2)])
    ribbon = fig.add_subplot(grid[0])
    ops = fig.add_subplot(grid[1], sharex=ribbon)
    errs = fig.add_subplot(grid[2], sharex=ribbon)
    end = max(_end_offset(journal), 1.0)

    series = journal.series
    if series.t:
        edges = [*series.t, series.t[-1] + series.bucket_seconds]
        ops.stairs(series.ok_per_s, edges, fill=True, color=_OK_COLOUR, alpha=0.22, lw=0)
        ops.stairs(series.ok_per_s, edges, color=_OK_COLOUR, lw=1.6, label="ok ops/s")
        errs.stairs(series.errors_per_s, edges, fill=True, color=_ERR_COLOUR, alpha=0.25, lw=0)
        errs.stairs(series.errors_per_s, edges, color=_ERR_COLOUR, lw=1.4,
                    label="errors/s (fail + info)")
        ops.set_ylim(0, max(max(series.ok_per_s, default=0.0) * 1.25, 1.0))
        errs.set_ylim(0, max(max(series.errors_per_s, default=0.0) * 1.3, 1.0))
    else:
        message = ("planned (dry run): nothing injected, no workload"
                   if _is_dry_run(journal) else "no workload samples")
        ops.text(0.5, 0.5, message, transform=ops.transAxes, ha="center", va="center",
                 fontsize=12, color=_GREY)
        for ax in (ops, errs):
            ax.set_ylim(0, 1)
            ax.tick_params(axis="y", labelleft=False)

    _draw_phase_ribbon(ribbon, journal, end)
    _shade_fault([ops, errs], journal, end, ops)
    _mark_recovery([ops, errs], journal, end, ops)

    ribbon.set_xlim(0, end)
    for ax in (ops, errs):
        ax.grid(axis="y", color="#e0e0e0", lw=0.8)
        ax.grid(axis="x", color="#f0f0f0", lw=0.6)
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(labelsize=9.5)
    ops.tick_params(axis="x", labelbottom=False)
    ops.set_ylabel("ok operations/s", fontsize=10.5, color=_OK_COLOUR)
    errs.set_ylabel("errors/s\n(fail + info)", fontsize=10, color=_ERR_COLOUR)
    errs.set_xlabel("seconds since start", fontsize=10.5)

    # Header: experiment and verdict badge, then run facts and figures, then the reason.
    fault = journal.fault_type or "fault"
    fig.text(0.065, 0.95, f"{journal.experiment}", fontsize=15, fontweight="bold",
             ha="left", va="center", color="#212121")
    fig.text(0.985, 0.95, f" {_verdict_word(journal)} ", fontsize=15, fontweight="bold",
             ha="right", va="center", color="white",
             bbox={"boxstyle": "round,pad=0.35", "fc": _verdict_colour(journal), "ec": "none"})
    fig.text(0.065, 0.895, f"{journal.namespace} · {fault} · {journal.substrate} · "
             f"run {journal.run_id}", fontsize=9.5, ha="left", va="center", color=_GREY)
    w = journal.workload
    figures = (f"{w.ok:,} ok · {w.failed:,} failed · {w.indeterminate:,} indeterminate · "
               f"lost {w.lost} · dup {w.duplicated} · unexpected {w.unexpected}")
    if w.latency_p50_ms is not None and w.latency_p99_ms is not None:
        figures += f"   |   p50/p99 {w.latency_p50_ms:.1f}/{w.latency_p99_ms:.1f} ms"
    fig.text(0.985, 0.895, figures, fontsize=9.5, ha="right", va="center", color="#424242")
    lines: list[tuple[str, str, str]] = []
    if journal.reason and journal.verdict != "Pass":
        lines.append((journal.reason, _verdict_colour(journal), "bold"))
    evidence = journal.fault_evidence
    if evidence is not None and (evidence.bit or evidence.summary != journal.reason):
        mark = "fault bit: " if evidence.bit else "fault did not bite: "
        text = evidence.summary.removeprefix(f"{journal.fault_type} did not bite: ")
        bitten = [s for s in journal.fault_steps if s.evidence is not None and s.evidence.bit]
        if evidence.bit and len(bitten) > 1:  # a scenario whose faults all bit: name each
            mark, text = "each fault bit: ", ", ".join(s.fault_type for s in bitten)
        lines.append((mark + text, _GREEN if evidence.bit else _AMBER, "normal"))
    for n, (text, colour, weight) in enumerate(lines[:2]):
        clipped = text if len(text) <= 135 else text[:134] + "…"  # the full text: summary.md
        fig.text(0.065, 0.85 - 0.035 * n, clipped, fontsize=10 if n else 10.5, ha="left",
                 va="center", color=colour, fontweight=weight)
    return fig


def write_timeline(journal: Journal, path: Path) -> Path:
    """Render :func:`build_timeline_figure` to a PNG of :data:`TIMELINE_SIZE_PX`."""
    fig = build_timeline_figure(journal)
    try:
        fig.savefig(path, dpi=_DPI, format="png", facecolor="white")
    finally:
        plt.close(fig)
    return path


# -- the folder ----------------------------------------------------------------------------


def write_report(journal: Journal, folder: Path, history_jsonl: Path | None = None,
                 history_note: str | None = None) -> ReportFiles:
    """Write journal.json, junit.xml, summary.md, timeline.png and report.html (and copy the
    history; without one, ``history_note`` says in summary.md why there is none)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    history: Path | None = None
    if history_jsonl is not None:
        history = folder / "history.jsonl"
        source = Path(history_jsonl)
        if source.resolve() != history.resolve():
            shutil.copyfile(source, history)
    journal_path = folder / "journal.json"
    journal_path.write_text(journal.to_json(), encoding="utf-8")
    junit = write_junit(journal, folder / "junit.xml")
    timeline = write_timeline(journal, folder / "timeline.png")
    summary = write_summary(journal, folder / "summary.md", timeline.name,
                            history.name if history else None, history_note)
    html = write_html_report(journal, folder, timeline)
    return ReportFiles(folder=folder, journal=journal_path, junit=junit, summary=summary,
                       timeline=timeline, history=history, html=html,
                       history_note=None if history else history_note)


# -- the CLI's verdict table ---------------------------------------------------------------


def _mark(ok: bool) -> Text:
    return Text("pass", style="bold green") if ok else Text("FAIL", style="bold red")


def render_verdict_table(journal: Journal) -> RenderableType:
    """What the CLI prints at the end: a table (phases, workload, fault evidence, recovery,
    invariants, checks, verdict), then the failing checks, each with its full name.

    No cell is ever cut short: long values wrap within their column, and check names (which
    are long) are listed under the table, where they have the whole width.
    """
    colour = {"PASS": "green", "FAIL": "red"}.get(_verdict_word(journal), "yellow")
    table = Table(title=f"{journal.experiment} ({journal.fault_type or 'fault'})",
                  title_style="bold", show_header=False, expand=False)
    # Names in the middle column (phases, invariants) are single words: give it their width,
    # so that they wrap only when the console is narrower than they are.
    names = [r.phase.value for r in journal.phases] + [i.name for i in journal.invariants]
    table.add_column("", style="bold", no_wrap=True)
    table.add_column("", overflow="fold", min_width=min(32, max(map(len, names), default=4)))
    table.add_column("", overflow="fold")

    for record in journal.phases:
        if record.phase.terminal or record.elapsed_seconds is None:
            continue
        note = _phase_note(journal, record.phase, record.detail)
        seconds = format_seconds(record.elapsed_seconds)
        table.add_row("phase", record.phase.value,
                      Text.assemble(seconds, (f"  {note}" if note else "", "dim")))
    table.add_section()

    w = journal.workload
    table.add_row("workload", f"{w.ok:,} ok / {w.invoked:,} invoked",
                  f"{w.failed:,} failed, {w.indeterminate:,} indeterminate, "
                  f"{w.throughput_ops_s:.1f} ops/s")
    if w.latency_p50_ms is not None:
        table.add_row("latency", f"p50 {_ms(w.latency_p50_ms)}",
                      f"p95 {_ms(w.latency_p95_ms)}, p99 {_ms(w.latency_p99_ms)}")
    for phase in w.phases:
        if phase.latency_p99_ms is not None:
            table.add_row("", f"{phase.phase.value} p99 {_ms(phase.latency_p99_ms)}",
                          f"p50 {_ms(phase.latency_p50_ms)}, {phase.ok:,} ok")
    integrity_ok = not (w.lost or w.duplicated or w.unexpected)
    table.add_row("lost / dup / unexp.", _mark(integrity_ok),
                  f"{w.lost} lost, {w.duplicated} duplicated, {w.unexpected} unexpected")
    table.add_section()

    evidence = journal.fault_evidence
    if evidence is not None:
        table.add_row("fault bit", Text("yes", style="bold green") if evidence.bit
                      else Text("NO", style="bold yellow"),
                      Text(evidence.summary, style="" if evidence.bit else "yellow"))
    state = journal.recovery_state
    if state == "recovered":
        table.add_row("recovery", _mark(True), recovery_text(journal))
    elif state == "timed-out":
        table.add_row("recovery", _mark(False), recovery_text(journal))
    else:
        table.add_row("recovery", Text("—", style="dim"), "not measured")

    for inv in journal.invariants:
        mark = (_mark(inv.passed) if inv.state in ("passed", "failed")
                else Text("not checked" if inv.state == "skipped" else "could not evaluate",
                          style="yellow"))
        table.add_row("invariant", Text(inv.name), Text.assemble(mark, "  ", inv.message))
    for result in journal.assertions:
        mark = (_mark(result.outcome == "passed") if result.outcome != "error"
                else Text("could not evaluate", style="yellow"))
        table.add_row("assertion", Text(result.name),
                      Text.assemble(mark, f"  {result.phase}",
                                    f": {result.message}" if result.message else ""))
    if journal.drift:
        table.add_row("drift", Text(f"{len(journal.drift)} reported", style="yellow"),
                      Text("; ".join(journal.drift[:3]) + (" …" if len(journal.drift) > 3 else "")))

    c = journal.checks
    if c.ran or c.failures:
        seed = f", seed {c.seed}" if c.seed is not None else ""
        errors = f", {c.errors} could not run" if c.errors else ""
        differs = f", {c.differs} differ" if c.differs else ""
        table.add_row("checks", _mark(not c.failed and not c.failures),
                      f"{c.passed} passed, {c.failed} failed, {c.skipped} skipped{errors}"
                      f"{differs}{seed}")
    table.add_section()

    table.add_row("verdict", Text(_verdict_word(journal), style=f"bold {colour}"),
                  Text(journal.reason or "", style=colour))
    if not c.failures:
        return table
    lines: list[RenderableType] = [table, Text("failing checks:", style="bold red")]
    for failure in c.failures:
        seed_value = failure.seed if failure.seed is not None else c.seed
        what = "could not run" if failure.outcome == "error" else "failed"
        lines.append(Text.assemble("  ", (failure.name, "bold red")))
        lines.append(Text(f"    {what}: {failure.message}" if failure.message else f"    {what}"))
        lines.append(Text(f"    replay: {replay_command(seed_value)}", style="dim"))
    return Group(*lines)


def print_verdict_table(journal: Journal, console: Console | None = None) -> None:
    """Print :func:`render_verdict_table` to ``console`` (default: stdout)."""
    (console or Console()).print(render_verdict_table(journal))
