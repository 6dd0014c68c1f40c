"""``pggit-chaos report NAMESPACE/NAME``: a cluster run's report, rendered like a local one.

Reads the experiment's journal ConfigMap (written by the runner Job: the journal with its
history, gzip-compressed) and writes journal.json, history.jsonl, junit.xml, summary.md and
timeline.png into a folder, with the engine's own report writer.
"""

from __future__ import annotations

import json
from pathlib import Path

from pggit_chaos.engine.journal import Journal
from pggit_chaos.engine.report import ReportFiles, write_report
from pggit_chaos.errors import ConfigurationError, TargetUnavailable
from pggit_chaos.kube import builders, names
from pggit_chaos.kube.client import CONFIG_MAPS, EXPERIMENTS, KubeClient

__all__ = ["fetch_report"]


def fetch_report(ref: str, folder: Path, client: KubeClient | None = None) -> ReportFiles:
    """Write the report of the experiment ``NAMESPACE/NAME`` into ``folder``."""
    namespace, _, name = ref.partition("/")
    if not namespace or not name:
        raise ConfigurationError(f"report takes NAMESPACE/NAME, not {ref!r}")
    client = client or KubeClient.from_environment()
    body = client.find(EXPERIMENTS, namespace, name)
    if body is None:
        raise TargetUnavailable(f"no experiment {ref}")
    cm_name = (body.get("status") or {}).get("journalConfigMap") \
        or names.journal_config_map_name(name)
    config_map = client.find(CONFIG_MAPS, namespace, cm_name)
    if config_map is None:
        phase = (body.get("status") or {}).get("phase", "Pending")
        raise TargetUnavailable(f"experiment {ref} has no journal yet (phase {phase}): the "
                                "runner writes it when the run ends")
    document = json.loads(builders.read_journal_config_map(config_map))
    history = document.pop("history", [])
    journal = Journal.model_validate(document)
    folder.mkdir(parents=True, exist_ok=True)
    history_path = None
    if history:
        history_path = folder / "history.jsonl"
        history_path.write_text("".join(json.dumps(op) + "\n" for op in history),
                                encoding="utf-8")
    return write_report(journal, folder, history_path)
