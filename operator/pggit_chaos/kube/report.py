"""``pggit-chaos report NAMESPACE/NAME``: a cluster run's report, rendered like a local one.

Reads a run's journal ConfigMap (written by the runner Job: the journal and its workload
history, gzip-compressed, the history in parts beside it when large; the current run's, or
with ``run`` one kept in ``status.history`` when the experiment was run again) and writes
journal.json, history.jsonl, junit.xml, summary.md and timeline.png into a folder, with the
engine's own report writer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pggit_chaos.engine.journal import Journal
from pggit_chaos.engine.report import ReportFiles, write_report
from pggit_chaos.errors import ConfigurationError, TargetUnavailable
from pggit_chaos.kube import builders, names
from pggit_chaos.kube.client import CONFIG_MAPS, EXPERIMENTS, SCHEDULES, KubeClient

__all__ = ["ScheduleReport", "fetch_report", "fetch_schedule_report", "journal_of_run"]


def journal_of_run(status: dict[str, Any], run: str) -> str | None:
    """The journal ConfigMap name of the run whose id starts with ``run`` (the current one or
    one in ``status.history``); :class:`ConfigurationError` naming the known runs if none or
    several match."""
    runs = [status, *[past for past in status.get("history") or [] if isinstance(past, dict)]]
    matches = [entry for entry in runs if str(entry.get("runId") or "").startswith(run)]
    if len(matches) != 1:
        known = ", ".join(str(entry.get("runId")) for entry in runs if entry.get("runId"))
        what = "no run" if not matches else "more than one run"
        raise ConfigurationError(f"{what} with id {run!r}: the runs are {known or 'none'}")
    name = matches[0].get("journalConfigMap")
    return str(name) if name else None


def _split(ref: str) -> tuple[str, str]:
    namespace, _, name = ref.partition("/")
    if not namespace or not name:
        raise ConfigurationError(f"report takes NAMESPACE/NAME, not {ref!r}")
    return namespace, name


def fetch_report(ref: str, folder: Path, client: KubeClient | None = None, *,
                 run: str | None = None) -> ReportFiles:
    """Write the report of the experiment ``NAMESPACE/NAME`` (its current run, or the run
    whose id starts with ``run``) into ``folder``."""
    namespace, name = _split(ref)
    client = client or KubeClient.from_environment()
    body = client.find(EXPERIMENTS, namespace, name)
    if body is None:
        raise TargetUnavailable(f"no experiment {ref}")
    status = body.get("status") or {}
    if run is not None:
        kept = journal_of_run(status, run)
        if kept is None:
            raise TargetUnavailable(f"run {run} of experiment {ref} kept no journal (it "
                                    "ended before its runner wrote one)")
        cm_name = kept
    else:
        cm_name = status.get("journalConfigMap") or names.journal_config_map_name(name)
    config_map = client.find(CONFIG_MAPS, namespace, cm_name)
    if config_map is None:
        phase = (body.get("status") or {}).get("phase", "Pending")
        raise TargetUnavailable(f"experiment {ref} has no journal yet (phase {phase}): the "
                                "runner writes it when the run ends")
    document = json.loads(builders.read_journal_config_map(config_map))
    older = document.pop("history", [])  # a journal written before the history's own key
    journal = Journal.model_validate(document)
    text, note = builders.read_journal_history(
        config_map, lambda part: client.find(CONFIG_MAPS, namespace, part))
    if text is None and older:
        text = "".join(json.dumps(op) + "\n" for op in older)
    folder.mkdir(parents=True, exist_ok=True)
    history_path = None
    if text:
        history_path = folder / "history.jsonl"
        history_path.write_text(text, encoding="utf-8")
    return write_report(journal, folder, history_path, note)


@dataclass
class ScheduleReport:
    """What :func:`fetch_schedule_report` wrote, and the runs it could not render yet."""

    folder: Path
    index: Path
    runs: list[ReportFiles] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)
    """Runs with no journal yet (still running, or ended before their runner wrote one)."""


def fetch_schedule_report(ref: str, folder: Path, client: KubeClient | None = None,
                          ) -> ScheduleReport:
    """The report of every run the schedule ``NAMESPACE/NAME`` still keeps (its history, as
    its limits left it), each in ``folder/<run>``, and ``folder/index.html`` of them."""
    from pggit_chaos.engine.html_report import write_index
    from pggit_chaos.kube.schedule_handlers import runs_of

    namespace, name = _split(ref)
    client = client or KubeClient.from_environment()
    schedule = client.find(SCHEDULES, namespace, name)
    if schedule is None:
        raise TargetUnavailable(f"no schedule {ref}")
    runs = runs_of(client, namespace, name, str((schedule.get("metadata") or {}).get("uid")))
    folder.mkdir(parents=True, exist_ok=True)
    report = ScheduleReport(folder=folder, index=folder / "index.html")
    for run in sorted(runs, key=lambda body: str(body["metadata"]["name"])):
        run_name = str(run["metadata"]["name"])
        if not (run.get("status") or {}).get("journalConfigMap"):
            report.unfinished.append(run_name)
            continue
        try:
            report.runs.append(fetch_report(f"{namespace}/{run_name}", folder / run_name,
                                            client))
        except TargetUnavailable:  # deleted by the history limits meanwhile
            report.unfinished.append(run_name)
    report.index = write_index(folder)
    return report
