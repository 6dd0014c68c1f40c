"""The API calls the operator and the runner make, as RBAC rules: the committed file and what
the emulator saw.

The committed file :data:`API_CALLS_FILE` is recorded on the real node: the real API server's
audit log of every call the chart's operator and runner ServiceAccounts made in
``scripts/real-node e2e`` and ``tests/realnode`` (``scripts/real-node audited-rbac``; see
``tests/realnode/test_the_chart_rbac.py``, which also regenerates it). It lists the calls as RBAC
sees them (apiGroup, resource[/subresource], verbs, and whether the resource is namespaced); the
chart's Roles are generated from it (``charts/pggit-chaos/templates/rbac.yaml`` reads it).

The tests left on the emulator add what the identities ``operator`` and ``runner`` did there to
:data:`RECORDED`; ``test_rbac_calls`` fails when that is a call the real server never saw the
product make (the emulator staged something the product does not do, or the real-node tests
miss a path). Only the product's own code may use these two identities: a test that makes calls
of its own uses ``admin`` or a test-only identity.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import yaml

from cluster.emulator import DEFAULT_RESOURCES

API_CALLS_FILE = Path(__file__).resolve().parents[2] / "charts" / "pggit-chaos" / "api-calls.yaml"
IDENTITIES = ("operator", "runner")
RECORD_ENV = "PGGIT_CHAOS_RECORD_API_CALLS"

#: identity -> {(apiGroup, resource, verb)} seen in this test session.
RECORDED: dict[str, set[tuple[str, str, str]]] = defaultdict(set)

_HEADER = (
    "# GENERATED from the real API server's audit log (scripts/real-node audited-rbac): every\n"
    "# API call the chart's operator and runner ServiceAccounts made on the real node in\n"
    "# `scripts/real-node e2e` and tests/realnode, as RBAC rules; the chart's Roles are built\n"
    "# from this file. Regenerate with (as root)\n"
    "#   scripts/real-node e2e --keep && PGGIT_CHAOS_REAL_NODE_TESTS=1 \\\n"
    "#     PGGIT_CHAOS_RECORD_API_CALLS=1 python -m pytest -m realnode tests/realnode; \\\n"
    "#   scripts/real-node down\n"
)


def record(emulator: object) -> None:
    """Add what ``emulator`` saw the operator and the runner do."""
    for identity in IDENTITIES:
        RECORDED[identity] |= emulator.rbac_rules(identity)  # type: ignore[attr-defined]


def namespaced(group: str, resource: str) -> bool:
    """Whether ``resource`` (``plural`` or ``plural/subresource``) of ``group`` is namespaced:
    a Role can grant it, else only a ClusterRole can."""
    plural = resource.split("/", 1)[0]
    for rtype in DEFAULT_RESOURCES:
        if (rtype.group, rtype.plural) == (group, plural):
            return rtype.namespaced
    raise KeyError(f"unknown resource {plural!r} of group {group!r}")


def load(path: Path = API_CALLS_FILE) -> dict[str, set[tuple[str, str, str]]]:
    """The committed calls, as the same triples."""
    data = yaml.safe_load(path.read_text()) if path.exists() else {}
    calls: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
    for identity, rules in (data or {}).items():
        for rule in rules or []:
            for verb in rule["verbs"]:
                calls[identity].add((rule["apiGroup"], rule["resource"], verb))
    return calls


def write(calls: dict[str, set[tuple[str, str, str]]], path: Path = API_CALLS_FILE) -> Path:
    """Write ``calls`` grouped by (apiGroup, resource), sorted, for stable diffs."""
    document: dict[str, list[dict[str, object]]] = {}
    for identity in IDENTITIES:
        grouped: dict[tuple[str, str], set[str]] = defaultdict(set)
        for group, resource, verb in calls.get(identity, set()):
            grouped[(group, resource)].add(verb)
        document[identity] = [{"apiGroup": group, "resource": resource,
                               "namespaced": namespaced(group, resource), "verbs": sorted(verbs)}
                              for (group, resource), verbs in sorted(grouped.items())]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_HEADER + yaml.safe_dump(document, sort_keys=False, width=100))
    return path
