"""``report.html``: one run's report as a single self-contained page, and ``index.html`` of runs.

Called by :func:`pggit_chaos.engine.report.write_report` (a local run's report folder, and
``pggit-chaos report`` of a cluster run) and, for the runs in a report folder, by the local
runner (:func:`write_index`). The page carries the verdict, the timeline picture (embedded as
a base64 PNG: the file can be mailed or attached alone), the fault's evidence, the phases, the
workload, recovery, the user's assertions, the invariants and the checks. Rendered by Jinja2
with autoescaping on: names, messages and SQL from a spec or a database are text, never markup.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from pggit_chaos.engine.journal import AFTER_RECOVERY, STEADY_STATE, Journal

__all__ = ["INDEX_NAME", "REPORT_NAME", "render_index", "render_report", "write_html_report",
           "write_index"]

REPORT_NAME = "report.html"
INDEX_NAME = "index.html"
_TEMPLATES = Path(__file__).resolve().parent / "templates"


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(_TEMPLATES),
        autoescape=select_autoescape(enabled_extensions=("html", "j2"), default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["ms"] = lambda value: "—" if value is None else f"{value:.1f} ms"
    env.filters["figure"] = figure
    return env


def figure(value: float | int | str) -> str:
    """A number as the reports print it: thousands separated, at most 3 decimals."""
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    if isinstance(value, int):
        return f"{value:,}"
    return value


def _wall(value: datetime | None) -> str:
    return "—" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def render_report(journal: Journal, timeline_png: bytes | None,
                  files: list[str] | None = None) -> str:
    """The page of one run; ``timeline_png`` is embedded, ``files`` are linked beside it."""
    # The text report's helpers, so that both say the same (imported here: report imports us).
    from pggit_chaos.engine.report import (
        _is_dry_run,
        _phase_note,
        _verdict_colour,
        _verdict_word,
        format_seconds,
        recovery_text,
        replay_command,
    )

    phases = []
    for record in journal.phases:
        name, detail = record.phase.value, (
            _phase_note(journal, record.phase, record.detail) or record.detail)
        if record.phase.terminal and _is_dry_run(journal):
            name, detail = "planned (dry run)", "nothing injected"
        phases.append({
            "name": name, "start": record.start_offset, "detail": detail,
            "duration": "" if record.phase.terminal else format_seconds(record.elapsed_seconds)})
    assertions: dict[str, dict[str, Any]] = {}
    for result in journal.assertions:
        assertions.setdefault(result.name, {})[result.phase] = result
    spec = journal.spec.get("spec", {}) if isinstance(journal.spec, dict) else {}
    written = (spec.get("verification") or {}).get("assertions") or []
    state = journal.recovery_state
    recovery = (f"Healthy again after {recovery_text(journal)}." if state == "recovered"
                else f"{recovery_text(journal)[:1].upper()}{recovery_text(journal)[1:]}."
                if state == "timed-out" else "Not measured (nothing was injected).")
    context = {
        "j": journal,
        "word": _verdict_word(journal),
        "colour": _verdict_colour(journal),
        "started": _wall(journal.started_at),
        "took": format_seconds(journal.duration_seconds),
        "timeline": base64.b64encode(timeline_png).decode("ascii") if timeline_png else "",
        "phases": phases,
        "recovery": recovery,
        "assertions": list(assertions.items()),
        "moments": (STEADY_STATE, AFTER_RECOVERY),
        "sql": [a for a in written if isinstance(a, dict) and a.get("name") in assertions],
        "outcome_words": {"passed": "✅ held", "failed": "❌ failed",
                          "error": "⚠️ could not evaluate"},
        "invariant_words": {"passed": "✅ pass", "failed": "❌ fail",
                            "skipped": "⏭️ not checked", "error": "⚠️ could not evaluate"},
        "replay": replay_command,
        "files": files or [],
    }
    return _environment().get_template("report.html.j2").render(context)


def write_html_report(journal: Journal, folder: Path, timeline: Path | None = None) -> Path:
    """Write ``report.html`` into ``folder`` (beside summary.md), the picture embedded."""
    png = timeline.read_bytes() if timeline is not None and timeline.exists() else None
    files = [name for name in ("summary.md", "journal.json", "junit.xml", "history.jsonl",
                               "timeline.png") if (folder / name).exists()]
    path = folder / REPORT_NAME
    path.write_text(render_report(journal, png, files), encoding="utf-8")
    return path


@dataclass(frozen=True)
class _Run:
    """One row of the index."""

    started_at: datetime | None
    started: str
    link: str
    namespace: str
    experiment: str
    fault: str
    word: str
    colour: str
    recovery: str
    took: str
    reason: str


def render_index(base: Path) -> str:
    """The index of every run folder under ``base`` (one holding a readable journal.json)."""
    from pggit_chaos.engine.report import _verdict_colour, _verdict_word, format_seconds

    runs: list[_Run] = []
    for path in sorted(base.glob(f"*/{'journal.json'}")):
        try:
            journal = Journal.from_json(path.read_bytes())
        except (OSError, ValueError):
            continue  # a folder being written, or not a run's
        page = path.parent / REPORT_NAME
        link = f"{path.parent.name}/{REPORT_NAME if page.exists() else 'summary.md'}"
        runs.append(_Run(
            started_at=journal.started_at, started=_wall(journal.started_at), link=link,
            namespace=journal.namespace, experiment=journal.experiment,
            fault=journal.fault_type or "unknown", word=_verdict_word(journal),
            colour=_verdict_colour(journal),
            recovery=format_seconds(journal.recovery_seconds),
            took=format_seconds(journal.duration_seconds), reason=journal.reason))
    earliest = datetime.min.replace(tzinfo=UTC)
    runs.sort(key=lambda run: (run.started_at or earliest, run.link), reverse=True)
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.word] = counts.get(run.word, 0) + 1
    return _environment().get_template("index.html.j2").render(
        runs=runs, counts=sorted(counts.items()))


def write_index(base: Path) -> Path:
    """Write ``index.html`` of the runs in the report folder ``base``."""
    path = base / INDEX_NAME
    path.write_text(render_index(base), encoding="utf-8")
    return path
