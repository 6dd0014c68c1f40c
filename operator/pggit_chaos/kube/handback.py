"""How a verification Job hands its checks results back to the runner Job.

``pggit-chaos checks --hand-back NAMESPACE/CONFIGMAP`` (inside the verification Job) writes a
compact summary as the container's termination message (at most 4096 bytes, what the kubelet
keeps) and the whole ``checks.json`` into a ConfigMap owned by the experiment. The runner reads
the ConfigMap, or the termination message when the ConfigMap could not be written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pggit_chaos.engine.journal import CheckFailureSummary, CheckResultSummary, ChecksSummary
from pggit_chaos.kube import builders, names
from pggit_chaos.kube.client import CONFIG_MAPS, EXPERIMENTS, ApiError, KubeClient

if TYPE_CHECKING:
    from pggit_chaos.config import Settings

__all__ = ["TERMINATION_LIMIT", "hand_back", "summary_from_dict", "termination_summary"]

#: The kubelet keeps at most this many bytes of a termination message.
TERMINATION_LIMIT = 4096


def termination_summary(result: dict[str, Any], limit: int = TERMINATION_LIMIT) -> str:
    """The checks result as compact JSON of at most ``limit`` bytes (failures trimmed)."""
    keys = ("passed", "failed", "skipped", "errors", "differs", "seed", "target", "profile",
            "exit_code", "hypothesis_examples")
    summary: dict[str, Any] = {key: result.get(key) for key in keys}
    failures = [{"name": f.get("name", ""), "message": str(f.get("message", ""))[:400],
                 "seed": f.get("seed"), "outcome": f.get("outcome", "failed")}
                for f in result.get("failures") or []]
    summary["failures"] = failures
    text = json.dumps(summary, separators=(",", ":"))
    while len(text.encode()) > limit and summary["failures"]:
        summary["failures"] = summary["failures"][:-1]
        summary["failures_trimmed"] = True
        text = json.dumps(summary, separators=(",", ":"))
    if len(text.encode()) > limit:
        summary["target"] = str(summary.get("target") or "")[:100]
        text = json.dumps(summary, separators=(",", ":"))[:limit]
    return text


def summary_from_dict(data: dict[str, Any], profile: str | None = None) -> ChecksSummary:
    """A journal's :class:`ChecksSummary` from ``checks.json`` or a termination summary."""
    failures = [
        CheckFailureSummary(name=str(f.get("name", "")), message=str(f.get("message", "")),
                            seed=f.get("seed"), example=f.get("example") or None,
                            outcome="error" if f.get("outcome") == "error" else "failed")
        for f in data.get("failures") or []
    ]
    results = [
        CheckResultSummary(name=str(c.get("name", "")), outcome=c.get("outcome", "error"),
                           message=str(c.get("reason", "") or ""),
                           duration_seconds=c.get("duration"))
        for c in data.get("checks") or []
    ]
    return ChecksSummary(
        passed=int(data.get("passed") or 0), failed=int(data.get("failed") or 0),
        skipped=int(data.get("skipped") or 0), errors=int(data.get("errors") or 0),
        differs=int(data.get("differs") or 0), target=data.get("target") or None,
        seed=data.get("seed"), profile=profile or data.get("profile"),
        hypothesis_examples=data.get("hypothesis_examples"), failures=failures,
        results=results)


def hand_back(result: dict[str, Any], ref: str, settings: Settings,
              client: KubeClient | None = None) -> list[str]:
    """Write the termination message and the results ConfigMap ``ref`` (NAMESPACE/NAME);
    returns what could not be written (never raises: the exit code still tells the verdict)."""
    problems: list[str] = []
    try:
        path = Path(os.environ.get("PGGIT_CHAOS_TERMINATION_MESSAGE_PATH")
                    or settings.termination_message_path)
        path.write_text(termination_summary(result), encoding="utf-8")
    except OSError as exc:
        problems.append(f"termination message: {exc}")
    namespace, _, name = ref.partition("/")
    try:
        client = client or KubeClient.from_environment()
        experiment_ref = os.environ.get(names.ENV_EXPERIMENT, "")
        exp_namespace, _, exp_name = experiment_ref.partition("/")
        owner = client.get(EXPERIMENTS, exp_namespace or namespace, exp_name)
        body = builders.config_map(
            name, namespace, owner,
            labels={names.EXPERIMENT_LABEL: builders.experiment_label_value(exp_name),
                    names.ROLE_LABEL: names.ROLE_CHECKS,
                    names.MANAGED_BY_LABEL: names.MANAGED_BY},
            data={names.CHECKS_KEY: json.dumps(result)}, binary_data=None)
        try:
            client.create(CONFIG_MAPS, namespace, body)
        except ApiError as exc:
            if not exc.conflict:
                raise
            client.patch(CONFIG_MAPS, namespace, name, {"data": body["data"]})
    except Exception as exc:
        problems.append(f"results ConfigMap {ref}: {exc}")
    return problems
